"""make check-gpu: compile the reference model for cuda and for cpu on this machine, check that both give the
same mesh input, and print per-stage latency and throughput at concurrency 1 and 8 (the decoder: batch 1 and
8, as Serve batches it), the GPU beside the CPU.

Runs where a GPU is but Ray, boto3 and the network are not: it needs torch, numpy, scipy, scikit-image and
pillow, plus the small wheels `make gpu-wheels` fetches (pydantic, trimesh). The CPU peer runs one intra-op
thread per call, as each Serve replica does, so concurrency 8 uses 8 cores.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bernini.compile import compile_model
from bernini.serve import stages
from tests.bench.figures import measure

PROMPT = "a wooden chair with four legs"
STEPS, GUIDANCE = 8, 3.0
CONCURRENCIES = (1, 8)
# fp32 everywhere: TF32 would trade the cross-device agreement checked below for speed. A third of a voxel
# of the 64^3 grid spanning [-1, 1]: a larger gap would move the mesh.
SDF_TOLERANCE = 1e-2
SECONDS_PER_FIGURE = 3.0


class Loaded:
    """One target's compiled graphs, loaded through its manifest exactly as a Serve replica loads them."""

    def __init__(self, artifacts: Path):
        self.text = stages.load_graph(artifacts, "encoder-text")
        self.image = stages.load_graph(artifacts, "encoder-image")
        self.denoiser = stages.load_graph(artifacts, "diffusion")
        self.decoders = stages.load_decoders(artifacts)

    def sdf(self, seed: int = 0) -> np.ndarray:
        condition = stages.encode(self.text, stages.text_tensor(PROMPT))
        latent = stages.sample_latent(self.denoiser, condition, STEPS, GUIDANCE, seed)
        return stages.decode_batch(self.decoders, [latent])[0]

    def calls(self) -> dict[str, dict[int, object]]:
        """Per stage, the call to time at each concurrency (for the decoder: the batch it decodes)."""
        tokens = stages.text_tensor(PROMPT)
        image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        condition = stages.encode(self.text, tokens)
        latent = stages.sample_latent(self.denoiser, condition, STEPS, GUIDANCE, 0)
        sample = lambda: stages.sample_latent(self.denoiser, condition, STEPS, GUIDANCE, 0)  # noqa: E731
        return {
            "encoder-text": dict.fromkeys(CONCURRENCIES, lambda: stages.encode(self.text, tokens)),
            "encoder-image": dict.fromkeys(CONCURRENCIES, lambda: stages.encode(self.image, image)),
            f"diffusion ({STEPS} steps)": dict.fromkeys(CONCURRENCIES, sample),
            "decoder": {batch: (lambda batch=batch: stages.decode_batch(self.decoders, [latent] * batch))
                        for batch in CONCURRENCIES},
            "text -> SDF": dict.fromkeys(CONCURRENCIES, self.sdf),
        }


def timed(call, concurrency: int) -> tuple[float, float]:
    """Median latency (s) and calls per second, over about SECONDS_PER_FIGURE after three warm-up calls."""
    for _ in range(3):
        call()
    started = time.perf_counter()
    call()
    one = time.perf_counter() - started
    requests = max(concurrency * 3, min(400, int(SECONDS_PER_FIGURE * concurrency / max(one, 1e-4))))
    latencies, rate = measure(call, requests, concurrency)
    return statistics.median(latencies), rate


def main() -> int:
    if not torch.cuda.is_available():
        print(f"make check-gpu needs a CUDA GPU: torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}) "
              "sees none on this machine", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(1)
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}; CPU peer: 1 thread per call")
    loaded = {}
    with tempfile.TemporaryDirectory() as scratch:
        for target in ("cuda", "cpu"):
            started = time.perf_counter()
            manifest = compile_model(Path(scratch) / target, "check-gpu", target, log=lambda _: None)
            print(f"compiled {len(manifest.stages)} graphs for {target} in {time.perf_counter() - started:.1f} s "
                  f"(toolchain: {manifest.toolchain.model_dump(exclude_none=True)})")
            loaded[target] = Loaded(Path(scratch) / target)

    on_gpu, on_cpu = loaded["cuda"].sdf(), loaded["cpu"].sdf()
    difference = float(np.abs(on_gpu - on_cpu).max())
    print(f"text -> SDF on the GPU vs the CPU: max |difference| {difference:.2e} (tolerance {SDF_TOLERANCE:.0e}, a third of a voxel)")
    if not difference <= SDF_TOLERANCE:
        print("FAIL: the cuda graphs do not compute what the cpu graphs compute", file=sys.stderr)
        return 1
    started = time.perf_counter()
    stages.mesh_bytes(on_gpu, "glb")
    print(f"triangulation (CPU in both): {1000 * (time.perf_counter() - started):.1f} ms per mesh")

    print(f"\n{'stage':<22}{'conc/batch':>11}{'GPU p50 ms':>12}{'GPU /s':>10}{'CPU p50 ms':>12}{'CPU /s':>10}"
          f"{'GPU/CPU':>9}")
    gpu_calls, cpu_calls = loaded["cuda"].calls(), loaded["cpu"].calls()
    for stage, by_concurrency in gpu_calls.items():
        for concurrency, call in by_concurrency.items():
            gpu_latency, gpu_rate = timed(call, concurrency if stage != "decoder" else 1)
            cpu_latency, cpu_rate = timed(cpu_calls[stage][concurrency], concurrency if stage != "decoder" else 1)
            if stage == "decoder":  # one call decodes `concurrency` latents
                gpu_rate, cpu_rate = gpu_rate * concurrency, cpu_rate * concurrency
            print(f"{stage:<22}{concurrency:>11}{gpu_latency * 1000:>12.2f}{gpu_rate:>10.1f}"
                  f"{cpu_latency * 1000:>12.2f}{cpu_rate:>10.1f}{gpu_rate / cpu_rate:>8.1f}x")
    print("\nthroughput counts stage outputs per second (decoder: latents decoded); p50 is per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
