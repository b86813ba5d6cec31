"""The Ray Serve application the operator's serveConfigV2 imports: bernini.serve.app:app_builder.

One deployment per pipeline stage, composed through deployment handles behind an HTTP ingress.
Deployment names match bernini.pipeline.DEPLOYMENT_NAMES, which the renderer uses for their options.
"""

import json
import logging
import time

import torch
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bernini.model.shapes import DECODER_BATCHES, MODALITIES
from bernini.serve import stages

logger = logging.getLogger("ray.serve")
MAX_BODY_BYTES = 16 << 20


@serve.deployment
class Encoder:
    def __init__(self, artifacts_dir: str, model_name: str, model_version: str):
        stages.check_model(artifacts_dir, model_name, model_version)
        torch.set_num_threads(1)  # replicas share a node's cores: one intra-op thread each, no oversubscription
        self.graphs = {m: stages.load_graph(artifacts_dir, f"encoder-{m}") for m in MODALITIES}
        logger.info("encoder loaded on %s", stages.placement())

    def encode(self, modality: str, tensor: torch.Tensor) -> torch.Tensor:
        return stages.encode(self.graphs[modality], tensor)


@serve.deployment
class Diffusion:
    def __init__(self, artifacts_dir: str, model_name: str, model_version: str):
        stages.check_model(artifacts_dir, model_name, model_version)
        torch.set_num_threads(1)
        self.denoiser = stages.load_graph(artifacts_dir, "diffusion")

    def sample(self, condition: torch.Tensor, steps: int, guidance: float, seed: int) -> torch.Tensor:
        return stages.sample_latent(self.denoiser, condition, steps, guidance, seed)


@serve.deployment
class Decoder:
    def __init__(self, artifacts_dir: str, model_name: str, model_version: str):
        stages.check_model(artifacts_dir, model_name, model_version)
        torch.set_num_threads(1)
        self.decoders = stages.load_decoders(artifacts_dir)

    # Concurrent requests share one call of the batch-4 graph: on Neuron a call's fixed cost dominates.
    @serve.batch(max_batch_size=max(DECODER_BATCHES), batch_wait_timeout_s=0.005)
    async def decode(self, latents: list[torch.Tensor]) -> list:
        return stages.decode_batch(self.decoders, latents)


@serve.deployment
class Triangulation:
    def mesh(self, sdf, file_format: str) -> tuple[bytes, dict]:
        return stages.mesh_bytes(sdf, file_format)


def _bad(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _number(query, name: str, default, cast, low, high):
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise stages.InputError(f"{name} must be a number") from None
    if not low <= value <= high:
        raise stages.InputError(f"{name} must be within [{low}, {high}]")
    return value


@serve.deployment
class BerniniIngress:
    """POST an image (image/png, image/jpeg), a point cloud (JSON {"points": [[x,y,z], ...]}) or a prompt
    (JSON {"prompt": "..."} or text/plain); get a mesh (?format=glb|obj|ply) with per-stage timings and the
    model version that made it."""

    def __init__(self, encoder, diffusion, decoder, triangulation, model_version: str):
        self.encoder, self.diffusion, self.decoder, self.triangulation = encoder, diffusion, decoder, triangulation
        self.model_version = model_version

    async def _condition_input(self, request: Request) -> tuple[str, torch.Tensor]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_BODY_BYTES:
            raise _TooLarge(declared)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge(len(body))
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("image/png", "image/jpeg"):
            return "image", stages.image_tensor(body)
        if content_type == "text/plain":
            return "text", stages.text_tensor(body.decode("utf-8", errors="strict"))
        if content_type == "application/json":
            try:
                document = json.loads(body)
            except ValueError:
                raise stages.InputError("body is not valid JSON") from None
            if isinstance(document, dict) and "points" in document:
                return "pointcloud", stages.points_tensor(document["points"])
            if isinstance(document, dict) and "prompt" in document:
                return "text", stages.text_tensor(document["prompt"])
            raise stages.InputError('JSON body needs "points" or "prompt"')
        raise _Unsupported(content_type or "none")

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET" and request.url.path.rstrip("/").endswith("healthz"):
            return JSONResponse({"status": "ok"})
        if request.method != "POST":
            return _bad(405, "POST an image, a point cloud or a prompt")
        try:
            file_format = request.query_params.get("format", "glb")
            if file_format not in stages.MESH_TYPES:
                raise stages.InputError(f"format must be one of {sorted(stages.MESH_TYPES)}")
            steps = _number(request.query_params, "steps", 8, int, 1, 50)
            guidance = _number(request.query_params, "guidance", 3.0, float, 0.0, 20.0)
            seed = _number(request.query_params, "seed", 0, int, 0, 2**31 - 1)
            modality, tensor = await self._condition_input(request)
        except _TooLarge as error:
            return _bad(413, f"body of {error.args[0]} bytes exceeds {MAX_BODY_BYTES}")
        except _Unsupported as error:
            return _bad(415, f"unsupported content type {error.args[0]}: use image/png, image/jpeg, "
                             "application/json or text/plain")
        except (stages.InputError, UnicodeDecodeError) as error:
            return _bad(400, str(error))

        timings = {}
        started = time.perf_counter()
        condition = await self.encoder.encode.remote(modality, tensor)
        timings["encoder"], started = time.perf_counter() - started, time.perf_counter()
        latent = await self.diffusion.sample.remote(condition, steps, guidance, seed)
        timings["diffusion"], started = time.perf_counter() - started, time.perf_counter()
        sdf = await self.decoder.decode.remote(latent)
        timings["decoder"], started = time.perf_counter() - started, time.perf_counter()
        mesh, info = await self.triangulation.mesh.remote(sdf, file_format)
        timings["triangulation"] = time.perf_counter() - started
        headers = {**stages.timings_header(timings), "X-Bernini-Mesh": json.dumps({"modality": modality, **info}),
                   "X-Bernini-Model-Version": self.model_version}
        return Response(mesh, media_type=stages.MESH_TYPES[file_format], headers=headers)


class _TooLarge(Exception):
    pass


class _Unsupported(Exception):
    pass


def app_builder(args: dict) -> Application:
    # Each stage checks the manifest where it loads (the workers hold the artifacts, not the head that
    # builds this application): a mismatch fails that deployment with the reason in the Serve status.
    artifacts = (args["artifacts_dir"], args["model_name"], args["model_version"])
    return BerniniIngress.bind(
        Encoder.bind(*artifacts), Diffusion.bind(*artifacts), Decoder.bind(*artifacts), Triangulation.bind(),
        args["model_version"],
    )
