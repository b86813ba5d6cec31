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
from bernini.model.triangulation import triangulate


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


def image_tensor(payload: bytes) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(payload)).convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"not a readable PNG or JPEG image: {error}") from None
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def points_tensor(points: object, max_points: int = 1_000_000) -> torch.Tensor:
    try:
        array = np.asarray(points, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("points must be a list of [x, y, z] numbers") from None
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise InputError(f"points must have shape (N, 3), got {array.shape}")
    if len(array) > max_points:
        raise InputError(f"at most {max_points} points, got {len(array)}")
    if not np.isfinite(array).all():
        raise InputError("points must be finite numbers")
    # The compiled encoder takes exactly POINTS points: resample deterministically.
    index = np.random.default_rng(0).choice(len(array), POINTS, replace=len(array) < POINTS)
    return torch.from_numpy(array[index])[None]


def text_tensor(prompt: object, max_length: int = 1000) -> torch.Tensor:
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
