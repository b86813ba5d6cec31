"""Loading compiled stages through the manifest and running them; no Ray here, so the in-process
benchmark peer and the Serve deployments share exactly this code."""

import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from bernini.artifacts.manifest import DEVICE_OF_TARGET, MANIFEST_FILE, Manifest
from bernini.model.diffusion import ddim_sample
from bernini.model.encoders import tokenize
from bernini.model.shapes import IMAGE_SIZE, POINTS


def load_manifest(artifacts_dir: str | Path) -> Manifest:
    return Manifest.model_validate_json((Path(artifacts_dir) / MANIFEST_FILE).read_text())


class WrongModel(RuntimeError):
    """The pulled artifacts are not the model release the RayService asks for."""


def check_model(artifacts_dir: str | Path, model_name: str, model_version: str) -> None:
    """Refuse to serve artifacts of another model or version than serveConfigV2 names."""
    model = load_manifest(artifacts_dir).model
    if (model.name, model.version) != (model_name, model_version):
        raise WrongModel(f"{artifacts_dir} holds {model.name} {model.version}, but this application serves "
                         f"{model_name} {model_version}; refusing to start")


class StageGraph:
    """A compiled graph on the device its target implies. Inputs move there; stages hand CPU tensors to each
    other, since a CUDA tensor cannot cross Ray's object store to a replica on another node."""

    def __init__(self, module, device: str):
        self.module = module
        self.device = device

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.module(*(tensor.to(self.device) for tensor in tensors))


def load_graph(artifacts_dir: str | Path, artifact: str) -> StageGraph:
    """torch.jit.load one compiled graph onto its target's device; inf2 graphs need torch_neuronx imported first."""
    manifest = load_manifest(artifacts_dir)
    if manifest.target == "inf2":
        import torch_neuronx  # noqa: F401  registers the Neuron ops the graph calls

    device = DEVICE_OF_TARGET[manifest.target]
    graph = torch.jit.load(str(Path(artifacts_dir) / manifest.stages[artifact].file), map_location=device)
    graph.eval()
    return StageGraph(graph, device)


def placement() -> str:
    """Which accelerator this replica was given; Ray sets these per actor from its neuron_cores or num_gpus."""
    if os.environ.get("NEURON_RT_VISIBLE_CORES"):
        return f"NeuronCores {os.environ['NEURON_RT_VISIBLE_CORES']}"
    if torch.cuda.is_available():
        return f"GPU {os.environ.get('CUDA_VISIBLE_DEVICES', '0')} ({torch.cuda.get_device_name()})"
    return "cpu"


class InputError(ValueError):
    """The request's input is malformed or out of bounds: answered with a 4xx."""


class UnsupportedInput(InputError):
    """The body is not what its content type declares, or the type is not one we take: answered with 415."""


class NoSurface(RuntimeError):
    """The SDF the decoder produced has no zero level set, so there is no mesh to make."""


NO_SURFACE = "the model produced no surface for this input (its SDF never crosses zero); try another seed"


# The encoder sees IMAGE_SIZE (224) square; a larger image only costs memory. The caps take a phone's default
# photo as it comes (12 MP at 4:3: 4032x3024, 4080x3072): a side of 4096, about 18x the encoder's, and 4096x3072
# pixels. Past 4:1 the square the encoder gets is squashed beyond recognition. All three are read from the header,
# before a pixel is decoded: a decode holds ~8 bytes a pixel (Pillow's 4-byte RGB(X) image and its converted copy),
# so the largest peaks at 99 MiB, where one row of 16 million pixels had taken 896 MiB.
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = 4096 * 3072
MAX_IMAGE_ASPECT = 4
# Pillow keeps up to 64 MiB of a PNG's (compressed) text metadata while it reads the header: 65 MiB from a 68 KB
# body. The encoder needs none of it.
MAX_PNG_TEXT_BYTES = 1 << 20
MAX_POINTS = 8 * POINTS  # the encoder resamples to POINTS; more points only cost memory
MAX_PROMPT_CHARS = 1000
# Counted in the raw body before json.loads builds anything (5 million empty lists took 359 MiB before the shape
# check); elements are at most commas plus containers. The largest legal document holds MAX_POINTS lists of 3 numbers:
# 2 commas within each and 1 after it. The margin holds a prompt's own brackets and commas (at most MAX_PROMPT_CHARS),
# the wrapper object and a few extra keys.
JSON_MARGIN = 4 * MAX_PROMPT_CHARS
MAX_JSON_CONTAINERS = MAX_POINTS + JSON_MARGIN
MAX_JSON_COMMAS = 3 * MAX_POINTS + JSON_MARGIN
# Only a prompt may hold non-ASCII text; in a longer body it would decode to up to 4 bytes a character.
MAX_NON_ASCII_JSON_BYTES = 4 * MAX_PROMPT_CHARS + JSON_MARGIN
# Pillow decodes only the declared format, chosen by its signature: no other plugin (EPS would run
# Ghostscript) is ever reached.
IMAGE_FORMATS = {"image/png": ("PNG", b"\x89PNG\r\n\x1a\n"), "image/jpeg": ("JPEG", b"\xff\xd8\xff")}
CONTENT_TYPES = (*IMAGE_FORMATS, "application/json", "text/plain")


def parse_input(content_type: str, body: bytes) -> tuple[str, torch.Tensor]:
    """(modality, tensor) from a request body; CPU-bound, so the ingress runs it off its event loop."""
    if content_type in IMAGE_FORMATS:
        return "image", image_tensor(body, content_type)
    if content_type == "text/plain":
        if len(body) > 4 * MAX_PROMPT_CHARS:  # refused before decoding: a character is at most 4 bytes of UTF-8
            raise InputError(f"prompt longer than {MAX_PROMPT_CHARS} characters")
        try:
            return "text", text_tensor(body.decode("utf-8", errors="strict"))
        except UnicodeDecodeError:
            raise InputError("text/plain body is not UTF-8") from None
    if content_type == "application/json":
        document = json_document(body)
        if isinstance(document, dict) and "points" in document:
            return "pointcloud", points_tensor(document["points"])
        if isinstance(document, dict) and "prompt" in document:
            return "text", text_tensor(document["prompt"])
        raise InputError('JSON body needs "points" or "prompt"')
    raise UnsupportedInput(f"unsupported content type {content_type or 'none'}: use {', '.join(CONTENT_TYPES)}")


def json_document(body: bytes) -> object:
    """json.loads of a body whose containers, elements and text were bounded first; refuses NaN, Infinity and
    nesting deeper than Python's recursion limit."""
    containers, commas = body.count(b"[") + body.count(b"{"), body.count(b",")
    if containers > MAX_JSON_CONTAINERS:
        raise InputError(f"more than {MAX_JSON_CONTAINERS} JSON lists and objects (at most {MAX_POINTS} points)")
    if commas > MAX_JSON_COMMAS:
        raise InputError(f"more than {MAX_JSON_COMMAS} JSON elements (at most {MAX_POINTS} points)")
    if len(body) > MAX_NON_ASCII_JSON_BYTES and not body.isascii():
        raise InputError(f"a JSON body over {MAX_NON_ASCII_JSON_BYTES} bytes must be ASCII (only a prompt may not be)")

    def not_a_number(text: str):
        raise InputError(f"{text} is not a number JSON allows")
    try:
        # Integers parse as floats: one of 4000 digits is inf, which points_tensor refuses, not an OverflowError.
        return json.loads(body, parse_int=float, parse_constant=not_a_number)
    except InputError:
        raise
    except RecursionError:
        raise InputError("JSON body is nested too deeply") from None
    except ValueError:
        raise InputError("body is not valid JSON") from None


def check_image_size(width: int, height: int) -> None:
    long_side, short_side = max(width, height), min(width, height)
    if long_side > MAX_IMAGE_SIDE:
        raise InputError(f"image of {width}x{height} pixels: a side exceeds {MAX_IMAGE_SIDE} pixels")
    if long_side > MAX_IMAGE_ASPECT * short_side:
        raise InputError(f"image of {width}x{height} pixels: its aspect ratio exceeds {MAX_IMAGE_ASPECT}:1")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"image of {width}x{height} pixels exceeds {MAX_IMAGE_PIXELS} pixels")


def image_tensor(payload: bytes, content_type: str = "image/png") -> torch.Tensor:
    from PIL import Image, PngImagePlugin

    PngImagePlugin.MAX_TEXT_MEMORY = MAX_PNG_TEXT_BYTES
    image_format, signature = IMAGE_FORMATS[content_type]
    if not payload.startswith(signature):
        raise UnsupportedInput(f"the body is not a {image_format} image, though declared {content_type}")
    try:
        image = Image.open(io.BytesIO(payload), formats=[image_format])  # reads the header only
        check_image_size(image.width, image.height)
        image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode at a reduced scale
        image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    except InputError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap, far above ours, refuses some headers in open()
        raise InputError(f"image exceeds {MAX_IMAGE_SIDE} pixels a side") from None
    except Exception:  # Pillow's errors name internals (object reprs, memory addresses): say what failed
        raise InputError(f"not a readable {image_format} image") from None
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def points_tensor(points: object, max_points: int = MAX_POINTS) -> torch.Tensor:
    if not isinstance(points, list) or not points or any(not isinstance(p, list) or len(p) != 3 for p in points):
        raise InputError("points must have shape (N, 3): a non-empty list of [x, y, z]")
    if len(points) > max_points:
        raise InputError(f"at most {max_points} points, got {len(points)}")
    if any(type(value) not in (float, int) for point in points for value in point):
        raise InputError("point coordinates must be JSON numbers")
    array = np.asarray(points, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError("points must be finite numbers")
    # The compiled encoder takes exactly POINTS points: resample deterministically.
    index = np.random.default_rng(0).choice(len(array), POINTS, replace=len(array) < POINTS)
    return torch.from_numpy(array[index])[None]


def text_tensor(prompt: object, max_length: int = MAX_PROMPT_CHARS) -> torch.Tensor:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("prompt must be a non-empty string")
    if len(prompt) > max_length:
        raise InputError(f"prompt longer than {max_length} characters")
    return tokenize(prompt)


def encode(graph: StageGraph, tensor: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return graph(tensor).cpu()


def sample_latent(denoiser: StageGraph, condition: torch.Tensor, steps: int, guidance: float, seed: int) -> torch.Tensor:
    with torch.no_grad():
        return ddim_sample(denoiser, condition.to(denoiser.device), steps=steps, guidance=guidance, seed=seed).cpu()


def load_decoders(artifacts_dir: str | Path) -> dict[int, StageGraph]:
    """The decoder's graphs by the batch size they were compiled for."""
    manifest = load_manifest(artifacts_dir)
    return {artifact.inputs[0].shape[0]: load_graph(artifacts_dir, name)
            for name, artifact in manifest.stages.items() if artifact.stage == "decoder"}


def decode_batch(decoders: dict[int, StageGraph], latents: list[torch.Tensor]) -> list[np.ndarray]:
    """Decode several latents in the smallest compiled batch that holds them, zero-padded (static shapes)."""
    bucket = min((size for size in decoders if size >= len(latents)), default=None)
    if bucket is None:
        largest = max(decoders)
        return decode_batch(decoders, latents[:largest]) + decode_batch(decoders, latents[largest:])
    batch = torch.cat(latents + [torch.zeros_like(latents[0])] * (bucket - len(latents)))
    with torch.no_grad():
        sdfs = decoders[bucket](batch)[:, 0].cpu().numpy()
    return [sdfs[index] for index in range(len(latents))]


MESH_TYPES = {"glb": "model/gltf-binary", "obj": "model/obj", "ply": "application/ply"}


def mesh_bytes(sdf: np.ndarray, file_format: str) -> tuple[bytes, dict]:
    # Imported here: trimesh and scikit-image cost ~2 s of CPU to import, which only the replicas that mesh pay.
    from bernini.model.triangulation import triangulate

    if not (np.min(sdf) <= 0.0 <= np.max(sdf)):
        raise NoSurface(NO_SURFACE)
    mesh = triangulate(sdf)
    data = mesh.export(file_type=file_format)
    if isinstance(data, str):
        data = data.encode()
    return data, {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "watertight": bool(mesh.is_watertight)}


def timings_header(timings: dict[str, float]) -> dict[str, str]:
    return {
        "Server-Timing": ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in timings.items()),
        "X-Bernini-Timings": json.dumps({stage: round(seconds, 4) for stage, seconds in timings.items()}),
    }
