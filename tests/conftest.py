"""Session fixtures: a real control plane (or BERNINI_TEST_KUBECONFIG's cluster) and per-test namespaces."""

import os
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from bernini.localcluster import LocalCluster
from tests.waiting import wait_for


@pytest.fixture(scope="session")
def kubeconfig(request, tmp_path_factory) -> Path:
    existing = os.environ.get("BERNINI_TEST_KUBECONFIG")
    if existing:
        yield Path(existing)
        return
    cluster = LocalCluster.in_directory(tmp_path_factory.mktemp("localcluster"), tied_to_parent=True)
    try:
        seconds = cluster.up()
    except Exception:
        print(cluster.log_tail())
        cluster.down()
        raise
    print(f"\nlocal control plane up in {seconds:.1f}s at {cluster.server}")
    yield cluster.kubeconfig
    if request.session.testsfailed:
        print("\n--- component logs (tails) ---\n" + cluster.log_tail())
    cluster.down()


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
