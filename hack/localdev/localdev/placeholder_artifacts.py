"""A placeholder artifact set (random stage bytes, a real manifest) for operator tests and the demo.

The operator only reads the manifest; `bernini compile` publishes real compiled stages the same way."""

import hashlib
import json
import os

from bernini.artifacts.manifest import MANIFEST_FILE
from bernini.artifacts.store import S3Location

STAGE_SIZES = {"encoder": 2048, "diffusion": 4096, "decoder": 3072}


def publish_placeholder_artifacts(s3, uri: str, version: str, name: str = "bernini", target: str = "inf2",
                      neuronx_cc: str | None = "2.21.0", cuda: str = "12.4", manifest_version: int = 1) -> dict:
    location = S3Location.parse(uri)
    if location.bucket not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=location.bucket)
    stages = {}
    for stage, size in STAGE_SIZES.items():
        payload = os.urandom(size)
        key = f"{stage}.pt"
        s3.put_object(Bucket=location.bucket, Key=location.key(key), Body=payload)
        stages[stage] = {"stage": stage, "file": key, "sha256": hashlib.sha256(payload).hexdigest(), "size": size,
                         "neuronCores": 1 if target == "inf2" else 0}
    manifest = {
        "manifestVersion": manifest_version,
        "model": {"name": name, "version": version},
        "target": target,
        "toolchain": {"torch": "2.9.0", "torchNeuronx": "2.9.0" if target == "inf2" else None,
                      "neuronxCc": neuronx_cc if target == "inf2" else None, "cuda": cuda if target == "cuda" else None},
        "stages": stages,
    }
    s3.put_object(Bucket=location.bucket, Key=location.key(MANIFEST_FILE), Body=json.dumps(manifest).encode())
    return manifest
