"""Spec and manifest builders shared by the unit tests."""

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.manifest import Manifest
from bernini.domain.pipeline import NEURAL_STAGES


def make_spec(**overrides) -> BerniniDeploymentSpec:
    body = {"model": {"version": "1.0.0", "artifactsUri": "s3://bucket/bernini/1.0.0/"}, "runtime": {"image": "serving:1"}}
    for key, value in overrides.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return BerniniDeploymentSpec.model_validate(body)


def make_manifest(version: str = "1.0.0", target: str = "inf2", neuronx_cc: str | None = "2.21.0", cores: int = 1,
                  cuda: str = "12.4") -> Manifest:
    stages = {
        stage: {"stage": stage, "file": f"{stage}.pt", "sha256": "0" * 64, "size": 1 << 20, "neuronCores": cores if target == "inf2" else 0}
        for stage in NEURAL_STAGES
    }
    return Manifest.model_validate(
        {
            "manifestVersion": 1,
            "model": {"name": "bernini", "version": version},
            "target": target,
            "toolchain": {"torch": "2.9.0", "neuronxCc": neuronx_cc if target == "inf2" else None,
                          "cuda": cuda if target == "cuda" else None},
            "stages": stages,
        }
    )
