"""`bernini compile`: trace every stage of the model, write manifest.json, publish the set to S3.

Targets: inf2 (torch_neuronx.trace, neuronx-cc; the default where torch-neuronx imports), cuda (torch.jit.trace
of the module and inputs moved to the GPU) and cpu (torch.jit.trace). All produce TorchScript saved with
torch.jit.save and loaded the same way.
"""

import datetime
import hashlib
import importlib.metadata
from pathlib import Path

import torch

from bernini.artifacts.manifest import DEVICE_OF_TARGET, MANIFEST_FILE, Manifest
from bernini.model.reference import CompiledStage, reference_stages

# Recorded in the manifest; --auto-cast none keeps fp32 numerics identical to the cpu target.
NEURON_COMPILER_ARGS = ["--model-type=generic", "--optlevel=2", "--auto-cast=none"]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def neuron_available() -> bool:
    try:
        import torch_neuronx  # noqa: F401
    except ImportError:
        return False
    return True


def trace(stage: CompiledStage, target: str, workdir: Path):
    example = tuple(tensor for _, tensor in stage.inputs)
    if target == "inf2":
        import torch_neuronx

        return torch_neuronx.trace(stage.module, example, compiler_args=NEURON_COMPILER_ARGS,
                                   compiler_workdir=str(workdir / stage.artifact))
    device = DEVICE_OF_TARGET[target]
    with torch.no_grad():
        return torch.jit.trace(stage.module.to(device), tuple(tensor.to(device) for tensor in example))


def check_target_available(target: str) -> None:
    if target == "inf2" and not neuron_available():
        raise SystemExit("target inf2 needs torch-neuronx (a Neuron DLC or an inf2/trn1 host); use --target cpu here")
    if target == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"target cuda needs a CUDA GPU; torch {torch.__version__} sees none "
                         f"(built for CUDA {torch.version.cuda or 'none'})")


def toolchain(target: str) -> dict:
    return {
        "torch": torch.__version__,
        "torchNeuronx": _version("torch-neuronx"),
        "neuronxCc": _version("neuronx-cc"),
        "cuda": torch.version.cuda if target == "cuda" else None,
        "gpu": torch.cuda.get_device_name() if target == "cuda" else None,
    }


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def compile_model(out: Path, version: str, target: str, name: str = "bernini", seed: int = 0,
                  weights: dict | None = None, log=print) -> Manifest:
    """weights: trained state dicts (bernini.model.weights.trained()); None draws random ones from `seed`, which
    is all a test of the plumbing needs."""
    check_target_available(target)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for stage in reference_stages(seed, weights):
        traced = trace(stage, target, out / "neuron-workdir")
        path = out / f"{stage.artifact}.pt"
        torch.jit.save(traced, str(path))
        artifacts[stage.artifact] = {
            "stage": stage.stage,
            "file": path.name,
            "sha256": _sha256(path),
            "size": path.stat().st_size,
            "neuronCores": stage.neuron_cores if target == "inf2" else 0,
            "inputs": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                       for n, t in stage.inputs],
            "compilerArgs": NEURON_COMPILER_ARGS if target == "inf2" else [],
        }
        log(f"traced {stage.artifact} ({path.stat().st_size / 2**20:.1f} MiB)")
    manifest = Manifest.model_validate({
        "manifestVersion": 1,
        "model": {"name": name, "version": version},
        "target": target,
        "toolchain": toolchain(target),
        "stages": artifacts,
        "createdAt": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    (out / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2, exclude_none=True))
    return manifest
