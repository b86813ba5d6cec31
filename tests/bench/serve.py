"""make bench-serve: the Serve pipeline (HTTP ingress + four deployments over handles) against calling the
same loaded stage graphs in-process, at concurrency 1 and 8. Medians and p95 of per-request latency."""

import argparse
import contextlib
import json
import statistics
import tempfile
import urllib.request
from pathlib import Path

import torch
import yaml

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.preflight import judge
from bernini.compile import compile_model
from localdev.ray_head import RayHead, localize_serve_config
from bernini.render.rayservice import render_rayservice
from bernini.serve import stages
from tests.bench.figures import measure, percentile

ROOT = Path(__file__).parents[2]
PROMPT = json.loads((ROOT / "examples" / "inputs" / "chair-prompt.json").read_text())["prompt"]


class InProcess:
    """The same graphs and the same stage code, one Python process, no Ray."""

    def __init__(self, artifacts: Path):
        torch.set_num_threads(1)  # as each Serve replica
        self.encoder = stages.load_graph(artifacts, "encoder-text")
        self.denoiser = stages.load_graph(artifacts, "diffusion")
        self.decoders = stages.load_decoders(artifacts)

    def __call__(self) -> bytes:
        condition = stages.encode(self.encoder, stages.text_tensor(PROMPT))
        latent = stages.sample_latent(self.denoiser, condition, 8, 3.0, 0)
        return stages.mesh_bytes(stages.decode_batch(self.decoders, [latent])[0], "glb")[0]


def serve_call(port: int):
    body = json.dumps({"prompt": PROMPT}).encode()

    def call() -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/?format=glb", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.read()
    return call


def compiled(work: Path):
    """The reference model compiled for cpu: (artifacts directory, manifest)."""
    artifacts = work / "artifacts"
    return artifacts, compile_model(artifacts, "1.0.0", "cpu", log=lambda _: None)


@contextlib.contextmanager
def serve_pipeline(work: Path, artifacts: Path, manifest):
    """The compiled model served by a real Ray head with the operator's rendered serveConfigV2 for
    examples/bernini-minimal.yaml; yields a closed-loop request function."""
    body = yaml.safe_load((ROOT / "examples" / "bernini-minimal.yaml").read_text())
    body["spec"]["model"]["target"] = "cpu"
    spec = BerniniDeploymentSpec.model_validate(body["spec"])
    rendered = render_rayservice("bernini", "default", "uid", spec, judge(spec, manifest, "0" * 64).manifest, "0" * 64)
    head = RayHead(Path(tempfile.mkdtemp(prefix="bernini-ray-")), work / "ray.log")
    head.start()
    try:
        head.deploy_serve(localize_serve_config(yaml.safe_load(rendered["spec"]["serveConfigV2"]), artifacts, head.serve_port))
        head.wait_running("bernini")
        call = serve_call(head.serve_port)
        for _ in range(3):
            call()  # warm up every replica's first call
        yield call
    finally:
        head.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    artifacts, manifest = compiled(work)
    results = {}
    peer = InProcess(artifacts)
    peer()  # warm up
    for concurrency in (1, 8):
        results[("in-process", concurrency)] = measure(peer, args.requests, concurrency)
    with serve_pipeline(work, artifacts, manifest) as call:
        for concurrency in (1, 8):
            results[("serve", concurrency)] = measure(call, args.requests, concurrency)

    print(f"{args.requests} requests each, text prompt -> GLB mesh, cpu-compiled reference model, 2 cores")
    print(f"{'path':<12} {'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for (path, concurrency), (latencies, throughput) in results.items():
        print(f"{path:<12} {concurrency:>4} {statistics.median(latencies) * 1000:8.0f} "
              f"{percentile(latencies, 0.95) * 1000:8.0f} {throughput:7.2f}")
    for concurrency in (1, 8):
        serve_p50 = statistics.median(results[("serve", concurrency)][0])
        local_p50 = statistics.median(results[("in-process", concurrency)][0])
        print(f"concurrency {concurrency}: Serve overhead p50 {(serve_p50 - local_p50) * 1000:+.0f} ms, "
              f"latency ratio serve/in-process {serve_p50 / local_p50:.2f}, throughput ratio "
              f"{results[('serve', concurrency)][1] / results[('in-process', concurrency)][1]:.2f}")


if __name__ == "__main__":
    main()
