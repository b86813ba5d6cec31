"""What the demo, the real-node tests and bench-e2e put on a real-node cluster besides the operator."""

import base64
from pathlib import Path

import yaml

from bernini.artifacts.publish import publish
from bernini.compile import compile_model
from localdev.cluster import REPO_ROOT
from localdev.nodelayer import S3_SECRET
from localdev.s3server import LocalS3

SERVING_ACCOUNT = REPO_ROOT / "examples" / "serving-serviceaccount.yaml"


def namespace_manifests(namespace: str, s3: LocalS3) -> list[dict]:
    """What a platform team prepares in a namespace: the serving ServiceAccount (IRSA on EKS) and, here,
    the Secret that the local Pod Identity stand-in hands to the init container."""
    account = yaml.safe_load(SERVING_ACCOUNT.read_text())
    account["metadata"]["namespace"] = namespace
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": S3_SECRET, "namespace": namespace},
              "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(s3.access_key.encode()).decode(),
                       "AWS_SECRET_ACCESS_KEY": base64.b64encode(s3.secret_key.encode()).decode()}}
    return [account, secret]


def publish_reference_model(s3_client, uri: str, version: str, directory: Path, seed: int = 0, log=lambda _: None):
    """The reference model compiled for cpu (torch.jit.trace) and published to uri, manifest last."""
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if bucket not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=bucket)
    manifest = compile_model(directory, version, "cpu", seed=seed, log=log)
    publish(s3_client, uri, directory, manifest)
    return manifest
