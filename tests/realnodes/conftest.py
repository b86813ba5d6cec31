"""Real nodes: a control plane whose pods run as real containers (containerd + runc) on local kubelets,
the real KubeRay operator as a pod, CoreDNS, kube-proxy, the serving image built here, the S3 server on the
node network, the operator as a process. Nothing stands in for Ray: the head, the workers, the autoscaler
and Serve run inside the pods the operator's RayService produces.

Package-scoped: the cluster goes down when the last real-node test ends, so no later test shares the two
cores with five kubelets and their pods."""

import hashlib
import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
import torch
import yaml
from kubernetes import client, config

from bernini.artifacts.publish import publish
from bernini.compile import compile_model
from bernini.model import weights
from localdev import LocalCluster, nodenet
from localdev.sizing import fit_to_local_nodes
from localdev.stack import namespace_manifests, publish_reference_model
from localdev.redis import LocalRedis
from localdev.s3server import LocalS3
from tests.conftest import running
from tests.operator_process import OperatorProcess
from localdev.waiting import wait_for

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "examples" / "bernini-minimal.yaml"
SERVING_SERVICE_ACCOUNT = REPO / "examples" / "serving-serviceaccount.yaml"
VERSIONS = ("1.0.0", "1.1.0")


def artifacts_uri(version: str) -> str:
    return f"s3://artifacts/e2e/{version}/"


@pytest.fixture(scope="package")
def real_cluster(request, tmp_path_factory) -> LocalCluster:
    if os.geteuid() != 0:
        pytest.fail("the real-node tests need root (network devices, cgroups, containerd); run them as root")
    cluster = LocalCluster.in_directory(tmp_path_factory.mktemp("realcluster"), real_nodes=True, tied_to_parent=True)
    yield from running(request, cluster, progress=lambda message: print(f"[real nodes] {message}", flush=True))


@pytest.fixture(scope="package")
def real_api(real_cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(real_cluster.kubeconfig))


@pytest.fixture(scope="package")
def real_core(real_api) -> client.CoreV1Api:
    return client.CoreV1Api(real_api)


@pytest.fixture(scope="package")
def real_custom(real_api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(real_api)


@pytest.fixture(scope="package")
def node_s3(real_cluster, tmp_path_factory) -> LocalS3:
    """versitygw on the node network's host address: pods (the init container) and the operator reach it."""
    root = tmp_path_factory.mktemp("node-s3")
    server = LocalS3(root / "data", root / "versitygw.log", tied_to_parent=True, host=nodenet.HOST_IP)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def node_redis(real_cluster, tmp_path_factory) -> LocalRedis:
    """redis-server on the node network's host address: GCS fault tolerance's store for the head pods."""
    root = tmp_path_factory.mktemp("node-redis")
    server = LocalRedis(root / "data", root / "redis.log", host=nodenet.HOST_IP, tied_to_parent=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def node_s3_client(node_s3):
    return boto3.client("s3", endpoint_url=node_s3.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=node_s3.access_key, aws_secret_access_key=node_s3.secret_key)


@pytest.fixture(scope="package")
def published_versions(node_s3_client, tmp_path_factory) -> dict[str, Path]:
    """The reference model compiled for cpu twice and published: the first version with the trained weights, the
    one users start from; the second with random ones, so the upgrade changes every artifact."""
    compiled = {}
    for seed, version in enumerate(VERSIONS):
        directory = tmp_path_factory.mktemp(f"compiled-{version}")
        publish_reference_model(node_s3_client, artifacts_uri(version), version, directory, seed=seed,
                                weights=weights.trained() if version == VERSIONS[0] else None)
        compiled[version] = directory
    return compiled


@pytest.fixture(scope="package")
def real_operator(real_cluster, node_s3, tmp_path_factory) -> OperatorProcess:
    crd = REPO / "crds"
    # Forced: test_gitops (earlier in the package) leaves the CRD managed by Argo CD's field manager.
    real_cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=bernini-tests", "-f", str(crd))
    real_cluster.wait_established("crd/berninideployments.bernini.dev")
    process = OperatorProcess(real_cluster.kubeconfig, node_s3.credentials_env,
                              tmp_path_factory.mktemp("real-operator") / "operator.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def serving_namespace(request, real_cluster, real_core, node_s3) -> str:
    """A namespace as a platform team prepares it: the example serving ServiceAccount, and the Secret the
    local Pod Identity stand-in (a MutatingAdmissionPolicy) hands to the init container. One per module: a
    module's tests share one deployment, as a user's history would (each deployment costs minutes here)."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    real_core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: real_core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
             f"default ServiceAccount in {name}")
    real_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": namespace_manifests(name, node_s3)}))
    failed_before = request.session.testsfailed
    yield name
    if request.session.testsfailed > failed_before:
        print(_pod_report(real_cluster, name))
    real_core.delete_namespace(name)


def _pod_report(cluster, namespace: str) -> str:
    """What a failed test leaves to read: events, and each container's state and last log lines."""
    lines = [cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")[-6000:]]
    for pod in json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]:
        statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get("containerStatuses", [])
        for status in statuses:
            lines.append(f"--- {pod['metadata']['name']}/{status['name']}: restarts {status['restartCount']}, "
                         f"state {json.dumps(status['state'])[:300]}, last {json.dumps(status.get('lastState'))[:300]}")
            for previous in ("--previous", None):
                try:
                    log = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], "-c", status["name"],
                                          *([previous] if previous else []), "--tail=25")
                    lines.append(f"[{previous or 'current'}]\n{log}")
                except Exception as error:  # a container that never ran has no log
                    lines.append(f"[{previous or 'current'}] no log: {str(error)[:200]}")
    return "\n".join(lines)


def publish_with_a_corrupt_stage(s3_client, version: str, directory: Path, stage: str = "diffusion",
                                 uri: str = ""):
    """A version whose manifest is valid (the preflight passes) but one stage object's bytes are random:
    only the init container's checksum can find out. Returns that stage's artifact entry."""
    uri = uri or artifacts_uri(version)
    manifest = publish_reference_model(s3_client, uri, version, directory, seed=2)
    artifact = next(artifact for artifact in manifest.stages.values() if artifact.stage == stage)
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    s3_client.put_object(Bucket=bucket, Key=prefix + artifact.file, Body=os.urandom(artifact.size))
    return artifact


def publish_with_a_stage_that_does_not_load(s3_client, version: str, directory: Path, stage: str = "diffusion",
                                            uri: str = ""):
    """A version whose every check passes (the manifest, and in the pod each file's SHA-256) but one stage file
    is not a TorchScript archive: its Serve replicas raise as they start."""
    manifest = compile_model(directory, version, "cpu", seed=3)
    name, artifact = next((name, artifact) for name, artifact in manifest.stages.items() if artifact.stage == stage)
    garbage = os.urandom(artifact.size)
    (directory / artifact.file).write_bytes(garbage)
    changed = artifact.model_copy(update={"sha256": hashlib.sha256(garbage).hexdigest()})
    publish(s3_client, uri or artifacts_uri(version), directory,
            manifest.model_copy(update={"stages": {**manifest.stages, name: changed}}))


class _Raises(torch.nn.Module):
    """A denoiser that loads like any graph and raises on every call."""

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this stage raises on every call (a test's fault)")


def publish_with_a_stage_that_raises(s3_client, version: str, directory: Path, stage: str = "diffusion"):
    """A version whose every check passes and whose replicas start, but whose stage raises on every request:
    the Serve app answers 500."""
    manifest = compile_model(directory, version, "cpu", seed=4)
    name, artifact = next((name, artifact) for name, artifact in manifest.stages.items() if artifact.stage == stage)
    torch.jit.save(torch.jit.script(_Raises()), str(directory / artifact.file))
    data = (directory / artifact.file).read_bytes()
    changed = artifact.model_copy(update={"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    publish(s3_client, artifacts_uri(version), directory,
            manifest.model_copy(update={"stages": {**manifest.stages, name: changed}}))


def small_spec(real_cluster, node_s3, version: str = VERSIONS[0]) -> dict:
    """examples/bernini-minimal.yaml fitted to the local nodes (see localdev.sizing)."""
    return fit_to_local_nodes(yaml.safe_load(EXAMPLE.read_text()), real_cluster.node_layer.images["SERVING_IMAGE"],
                              node_s3.endpoint_url, version, artifacts_uri(version))
