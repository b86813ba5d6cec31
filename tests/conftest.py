"""Session fixtures: a real control plane (or BERNINI_TEST_KUBECONFIG's cluster) and per-test namespaces."""

import os
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from kubernetes import client, config

from localdev import LocalCluster
from localdev.s3server import LocalS3
from localdev.placeholder_artifacts import publish_placeholder_artifacts
from tests.operator_process import OperatorProcess
from localdev.waiting import wait_for

CRD_FILE = Path(__file__).parents[1] / "crds" / "bernini.dev_berninideployments.yaml"


@pytest.fixture(scope="session")
def local_cluster(request, tmp_path_factory) -> LocalCluster | None:
    """The real local control plane, or None when BERNINI_TEST_KUBECONFIG names an existing cluster."""
    if os.environ.get("BERNINI_TEST_KUBECONFIG"):
        yield None
        return
    # Audited: the leader-election tests read who wrote what, and when, from the API server's own record.
    yield from running(request, LocalCluster.in_directory(tmp_path_factory.mktemp("localcluster"), tied_to_parent=True,
                                                          audit=True))


def running(request, cluster: LocalCluster, progress=lambda _: None):
    """A cluster fixture's body: start cluster, yield it, stop it; logs are printed when something failed."""
    try:
        seconds = cluster.up(progress=progress)
    except Exception:
        print(cluster.log_tail())
        cluster.down()
        raise
    print(f"\ncluster up in {seconds:.1f}s at {cluster.server}")
    yield cluster
    if request.session.testsfailed:
        print("\n--- component logs (tails) ---\n" + cluster.log_tail(lines=15))
    cluster.down()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster) -> Path:
    return local_cluster.kubeconfig if local_cluster else Path(os.environ["BERNINI_TEST_KUBECONFIG"])


@pytest.fixture(scope="session")
def api_client(kubeconfig) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def core(api_client) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def namespace(core) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until kube-controller-manager has created the namespace's default ServiceAccount.
    wait_for(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        f"default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory) -> LocalS3:
    """The real S3-compatible server (versitygw) the artifact tests and the operator's preflight talk to."""
    root = tmp_path_factory.mktemp("s3")
    server = LocalS3(root / "data", root / "versitygw.log", tied_to_parent=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(local_s3):
    return boto3.client(
        "s3", endpoint_url=local_s3.endpoint_url, region_name="us-east-1",
        aws_access_key_id=local_s3.access_key, aws_secret_access_key=local_s3.secret_key,
    )


def apply_crd(api_client, crd: dict) -> None:
    """Server-side apply of a CRD with the tests' field manager."""
    client.ApiextensionsV1Api(api_client).patch_custom_resource_definition(
        crd["metadata"]["name"], crd, field_manager="bernini-tests", force=True,
        _content_type="application/apply-patch+yaml",
    )


@pytest.fixture(scope="session")
def bernini_crd(kubeconfig, api_client):
    crd = yaml.safe_load(CRD_FILE.read_text())
    extensions = client.ApiextensionsV1Api(api_client)
    apply_crd(api_client, crd)
    wait_for(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []
        ),
        "the BerniniDeployment CRD to be Established",
    )
    return crd


@pytest.fixture(scope="session")
def operator(kubeconfig, bernini_crd, local_s3, tmp_path_factory) -> "OperatorProcess":
    process = OperatorProcess(kubeconfig, local_s3.credentials_env, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()
    if process.log_file.exists():
        print("\n--- operator log (tail) ---\n" + "\n".join(process.log_file.read_text().splitlines()[-40:]))


EXAMPLE = Path(__file__).parents[1] / "examples" / "bernini-minimal.yaml"


@pytest.fixture
def example_deployment(namespace, core, s3, local_s3):
    """examples/bernini-minimal.yaml pointed at the local S3 server, with its artifacts published there."""
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bernini-serving")))

    def build(version: str = "1.0.0", publish: bool = True, target: str = "inf2") -> dict:
        body = yaml.safe_load(EXAMPLE.read_text())
        uri = f"s3://artifacts/{namespace}/{version}/"
        body["spec"]["model"].update(version=version, artifactsUri=uri)
        body["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": local_s3.endpoint_url}
        if publish:
            publish_placeholder_artifacts(s3, uri, version, target=target)
        return body

    return build


SERVE_URI = "s3://artifacts/serve/1.0.0/"


@pytest.fixture(scope="session")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory, s3, local_s3, monkeypatch_session) -> Path:
    """The reference model compiled (cpu target), published to SERVE_URI and pulled back like an init container."""
    from bernini.artifacts.publish import publish
    from bernini.artifacts.pull import Puller
    from bernini.compile import compile_model

    compiled = tmp_path_factory.mktemp("compiled")
    manifest = compile_model(compiled, "1.0.0", "cpu", log=lambda _: None)
    if "artifacts" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="artifacts")
    publish(s3, SERVE_URI, compiled, manifest)
    for name, value in local_s3.credentials_env.items():
        monkeypatch_session.setenv(name, value)
    pulled = tmp_path_factory.mktemp("pulled")
    Puller(SERVE_URI, pulled, endpoint_url=local_s3.endpoint_url, log=lambda _: None).pull()
    return pulled
