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


def destination_namespaces(namespaces: tuple[str, ...], s3: LocalS3) -> list[dict]:
    """Namespaces prepared as namespace_manifests describes, before Argo CD syncs into them (the Secret
    stands in for the platform's identity setup and never goes to git)."""
    return [item for namespace in namespaces
            for item in ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                         *namespace_manifests(namespace, s3))]


def platform_repository(deployment: dict) -> list[dict]:
    """What the platform team's repository holds for one model: the serving ServiceAccount and the
    BerniniDeployment (Argo CD puts both in the Application's destination namespace)."""
    return [yaml.safe_load(SERVING_ACCOUNT.read_text()), deployment]


def publish_reference_model(s3_client, uri: str, version: str, directory: Path, seed: int = 0,
                            weights: dict | None = None, log=lambda _: None):
    """The reference model compiled for cpu (torch.jit.trace) and published to uri, manifest last: trained
    `weights`, or random ones drawn from `seed`."""
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if bucket not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket=bucket)
    manifest = compile_model(directory, version, "cpu", seed=seed, weights=weights, log=log)
    publish(s3_client, uri, directory, manifest)
    return manifest
