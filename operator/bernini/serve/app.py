"""The Ray Serve application the operator's serveConfigV2 imports: bernini.serve.app:app_builder.

The layout's deployments (the three neural stages fused in one, or one per stage), then triangulation, composed
through deployment handles behind an HTTP ingress.
Deployment names match bernini.domain.pipeline.DEPLOYMENT_NAMES, which the renderer uses for their options.
"""

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from ray import serve
from ray.serve import Application
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bernini.domain.pipeline import FUSED
from bernini.model.diffusion import GUIDANCE, STEPS
from bernini.model.shapes import DECODER_BATCHES, MODALITIES
from bernini.serve import stages

logger = logging.getLogger("ray.serve")
MAX_BODY_BYTES = 16 << 20
# Bodies parsed at once in a replica, each on a thread of its own. A parse is CPU-bound on the ingress's fraction of
# a core, so more at once finish no sooner; two let a prompt pass a large upload. The worst parse peaks at 115 MiB
# (stages.MAX_IMAGE_PIXELS decoded, and a chunk of the 16 MiB body that Pillow reads whole); fewer threads also
# leave fewer malloc arenas holding freed pixels.
PARSE_SLOTS = 2


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


class _BatchedDecoding:
    """The decoder's graphs, called in batches across concurrent requests (Decoder and FusedStages)."""

    def _load_decoders(self, artifacts_dir: str) -> None:
        self.decoders = stages.load_decoders(artifacts_dir)
        if stages.load_manifest(artifacts_dir).target == "cpu":
            # On the CPU a batch costs its full size, padding included: waiting for one to fill only adds latency.
            self.decode.set_max_batch_size(1)
            self.decode.set_batch_wait_timeout_s(0)

    # Concurrent requests share one call of the batch-4 graph: on Neuron or a GPU a call's fixed cost dominates.
    @serve.batch(max_batch_size=max(DECODER_BATCHES), batch_wait_timeout_s=0.005)
    async def decode(self, latents: list[torch.Tensor]) -> list:
        return stages.decode_batch(self.decoders, latents)


@serve.deployment
class Decoder(_BatchedDecoding):
    def __init__(self, artifacts_dir: str, model_name: str, model_version: str):
        stages.check_model(artifacts_dir, model_name, model_version)
        torch.set_num_threads(1)
        self._load_decoders(artifacts_dir)


@serve.deployment
class FusedStages(_BatchedDecoding):
    """Layout fused: the three compiled stages in one replica on one accelerator share, tensors passed in-process.
    Encoding and sampling run on a thread, so the event loop stays free to gather concurrent decodes."""

    def __init__(self, artifacts_dir: str, model_name: str, model_version: str):
        stages.check_model(artifacts_dir, model_name, model_version)
        torch.set_num_threads(1)
        self.encoders = {m: stages.load_graph(artifacts_dir, f"encoder-{m}") for m in MODALITIES}
        self.denoiser = stages.load_graph(artifacts_dir, "diffusion")
        self._load_decoders(artifacts_dir)
        logger.info("fused stages loaded on %s", stages.placement())

    def _latent(self, modality: str, tensor: torch.Tensor, steps: int, guidance: float, seed: int, timings: dict):
        started = time.perf_counter()
        condition = stages.encode(self.encoders[modality], tensor)
        timings["encoder"], started = time.perf_counter() - started, time.perf_counter()
        latent = stages.sample_latent(self.denoiser, condition, steps, guidance, seed)
        timings["diffusion"] = time.perf_counter() - started
        return latent

    async def sdf(self, modality: str, tensor: torch.Tensor, steps: int, guidance: float, seed: int):
        """(sdf, per-stage seconds)."""
        timings: dict[str, float] = {}
        latent = await asyncio.to_thread(self._latent, modality, tensor, steps, guidance, seed, timings)
        started = time.perf_counter()
        sdf = await self.decode(latent)
        timings["decoder"] = time.perf_counter() - started
        return sdf, timings


@serve.deployment
class Triangulation:
    def __init__(self):
        import bernini.model.triangulation  # noqa: F401  at start, not on the first request (see stages.mesh_bytes)

    def mesh(self, sdf, file_format: str) -> tuple[bytes, dict]:
        return stages.mesh_bytes(sdf, file_format)


def _bad(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _at_capacity(what: str) -> JSONResponse:
    return _bad(503, f"{what} is at capacity; retry shortly", **{"Retry-After": "1"})


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


async def _body(request: Request) -> bytes:
    """The body, refused past MAX_BODY_BYTES as it streams in: a chunked upload declares no length."""
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_BODY_BYTES:
        raise _TooLarge(f"body of {declared} bytes exceeds {MAX_BODY_BYTES}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge(f"body exceeds {MAX_BODY_BYTES} bytes")
    return bytes(body)


@serve.deployment
class BerniniIngress:
    """POST an image (image/png, image/jpeg), a point cloud (JSON {"points": [[x,y,z], ...]}) or a prompt
    (JSON {"prompt": "..."} or text/plain); get a mesh (?format=glb|obj|ply) with per-stage timings and the
    model version that made it. Health checks belong to Serve's proxy (GET /-/healthz), which never queues
    behind requests."""

    def __init__(self, neural: dict, triangulation, model_version: str):
        """neural: {"fused": handle} or {"encoder": ..., "diffusion": ..., "decoder": ...} (the layout's)."""
        self.neural, self.triangulation = neural, triangulation
        self.model_version = model_version
        self.parser = ThreadPoolExecutor(PARSE_SLOTS, thread_name_prefix="parse")

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return _bad(405, "POST an image, a point cloud or a prompt")
        try:
            file_format = request.query_params.get("format", "glb")
            if file_format not in stages.MESH_TYPES:
                raise stages.InputError(f"format must be one of {sorted(stages.MESH_TYPES)}")
            steps = _number(request.query_params, "steps", STEPS, int, 1, 50)
            guidance = _number(request.query_params, "guidance", GUIDANCE, float, 0.0, 20.0)
            seed = _number(request.query_params, "seed", 0, int, 0, 2**31 - 1)
            modality, tensor = await self._parse(request)
        except _TooLarge as error:
            return _bad(413, error.args[0])
        except stages.UnsupportedInput as error:
            return _bad(415, str(error))
        except stages.InputError as error:
            return _bad(400, str(error))
        try:
            mesh, headers = await self._pipeline(modality, tensor, steps, guidance, seed, file_format)
        except BackPressureError:
            return _at_capacity("the pipeline")
        except stages.NoSurface:
            return _bad(422, stages.NO_SURFACE)  # str(error) would carry Ray's remote traceback
        except Exception:
            logger.exception("a pipeline stage failed")  # the trace stays in the replica's log
            return _bad(500, "a pipeline stage failed; the Serve logs have the details")
        return Response(mesh, media_type=stages.MESH_TYPES[file_format], headers=headers)

    async def _parse(self, request: Request) -> tuple[str, torch.Tensor]:
        """The body as (modality, tensor); the body itself is not held while the pipeline runs."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _body(request)
        return await asyncio.get_running_loop().run_in_executor(self.parser, stages.parse_input, content_type, body)

    async def _sdf(self, modality, tensor, steps, guidance, seed) -> tuple[object, dict]:
        if FUSED in self.neural:
            return await self.neural[FUSED].sdf.remote(modality, tensor, steps, guidance, seed)
        timings = {}
        started = time.perf_counter()
        condition = await self.neural["encoder"].encode.remote(modality, tensor)
        timings["encoder"], started = time.perf_counter() - started, time.perf_counter()
        latent = await self.neural["diffusion"].sample.remote(condition, steps, guidance, seed)
        timings["diffusion"], started = time.perf_counter() - started, time.perf_counter()
        sdf = await self.neural["decoder"].decode.remote(latent)
        timings["decoder"] = time.perf_counter() - started
        return sdf, timings

    async def _pipeline(self, modality, tensor, steps, guidance, seed, file_format) -> tuple[bytes, dict]:
        sdf, timings = await self._sdf(modality, tensor, steps, guidance, seed)
        started = time.perf_counter()
        mesh, info = await self.triangulation.mesh.remote(sdf, file_format)
        timings["triangulation"] = time.perf_counter() - started
        return mesh, {**stages.timings_header(timings), "X-Bernini-Mesh": json.dumps({"modality": modality, **info}),
                      "X-Bernini-Model-Version": self.model_version}


class _TooLarge(Exception):
    pass


def app_builder(args: dict) -> Application:
    # Each stage checks the manifest where it loads (the workers hold the artifacts, not the head that
    # builds this application): a mismatch fails that deployment with the reason in the Serve status.
    artifacts = (args["artifacts_dir"], args["model_name"], args["model_version"])
    if args.get("layout", "staged") == FUSED:  # configs rendered before layouts existed were staged
        neural = {FUSED: FusedStages.bind(*artifacts)}
    else:
        neural = {"encoder": Encoder.bind(*artifacts), "diffusion": Diffusion.bind(*artifacts),
                  "decoder": Decoder.bind(*artifacts)}
    return BerniniIngress.bind(neural, Triangulation.bind(), args["model_version"])
