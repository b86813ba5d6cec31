"""A real Argo CD (application-controller, repo-server, Redis) syncing from local git repositories.

Package-scoped, on a control plane of its own: the example Applications must sync from an empty cluster
(nothing of Bernini installed), which the session's shared control plane is not."""

import pytest
import yaml

from localdev import LocalCluster
from localdev.argocd import LocalArgoCD
from tests.conftest import running

@pytest.fixture(scope="package")
def empty_cluster(request, tmp_path_factory) -> LocalCluster:
    yield from running(request, LocalCluster.in_directory(tmp_path_factory.mktemp("gitops-cluster"), tied_to_parent=True))


@pytest.fixture(scope="package")
def argocd(request, empty_cluster, tmp_path_factory) -> LocalArgoCD:
    yield from started(request, LocalArgoCD(empty_cluster, tmp_path_factory.mktemp("argocd"), tied_to_parent=True))


def started(request, instance: LocalArgoCD):
    """An Argo CD fixture's body: up, yield, down; its logs are printed when a test failed."""
    failed_before = request.session.testsfailed
    try:
        instance.up()
    except Exception:
        print(instance.log_tail())
        instance.down()
        raise
    yield instance
    if request.session.testsfailed > failed_before:
        print("\n--- Argo CD logs (tails) ---\n" + instance.log_tail())
    instance.down()


def apply(cluster: LocalCluster, *objects: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
