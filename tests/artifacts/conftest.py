"""An artifact set of random bytes published to the local store (versitygw) under a per-test prefix."""

import hashlib
import os
from pathlib import Path

import pytest

from bernini.artifacts.manifest import Manifest
from bernini.artifacts.publish import publish

MiB = 1 << 20


def write_set(directory: Path, sizes: dict[str, int], version: str = "1.0.0") -> Manifest:
    directory.mkdir(parents=True, exist_ok=True)
    stages = {}
    for stage, size in sizes.items():
        data = os.urandom(size)
        (directory / f"{stage}.pt").write_bytes(data)
        stages[stage] = {"stage": stage, "file": f"{stage}.pt", "sha256": hashlib.sha256(data).hexdigest(), "size": size,
                         "neuronCores": 1}
    return Manifest.model_validate({
        "manifestVersion": 1, "model": {"name": "bernini", "version": version}, "target": "inf2",
        "toolchain": {"torch": "2.9.0", "torchNeuronx": "2.9.0", "neuronxCc": "2.21.0"}, "stages": stages,
    })


SIZES = {"encoder": 3 * MiB + 17, "diffusion": 20 * MiB + 5, "decoder": 1}


@pytest.fixture
def published(s3, local_s3, tmp_path, request):
    uri = f"s3://artifacts/{request.node.name}/"
    if "artifacts" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="artifacts")
    manifest = write_set(tmp_path / "compiled", SIZES)
    publish(s3, uri, tmp_path / "compiled", manifest)
    return uri, manifest
