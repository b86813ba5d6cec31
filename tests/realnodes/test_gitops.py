"""GitOps on real containers: a real Argo CD syncs examples/argocd (the app of apps: CRDs, the operator's chart,
a model) from local git repositories. The operator runs from the chart, as a pod (the local operator image:
the serving image's layers with `bernini` as entrypoint); its AWS keys arrive at admission as EKS Pod Identity
would hand them (localdev.nodelayer.s3_credentials_policy). Every change below is a git commit; the test only
reads the cluster and Argo CD's Applications.

The tests run in file order and share one tree (module fixture), as a user's history would."""

import time

import pytest

from localdev.argocd import MODEL_NAMESPACE as MODELS
from localdev.argocd import OPERATOR_NAMESPACE, ExampleRepositories, LocalArgoCD, state
from localdev.cluster import ClusterError
from localdev.sizing import fit_operator_chart
from localdev.stack import destination_namespaces, platform_repository
from localdev.waiting import wait_for
from tests.gitops.conftest import apply, started
from tests.operator_process import OperatorProcess
from tests.realnodes import helpers
from tests.realnodes.conftest import VERSIONS, publish_with_a_corrupt_stage, small_spec

pytestmark = pytest.mark.realnodes



def model_objects(real_cluster, node_s3, version: str, **spec) -> list[dict]:
    """What the platform repository holds: the serving ServiceAccount and the BerniniDeployment."""
    body = small_spec(real_cluster, node_s3, version)
    body["spec"].update(spec)
    return platform_repository(body)


class Tree:
    def __init__(self, argocd: LocalArgoCD, repositories: ExampleRepositories, real_cluster, node_s3):
        self.argocd, self.repositories = argocd, repositories
        self.real_cluster, self.node_s3 = real_cluster, node_s3

    def commit_model(self, message: str, version: str, **spec) -> None:
        self.repositories.commit_model(model_objects(self.real_cluster, self.node_s3, version, **spec), message)
        self.argocd.refresh("bernini-model")  # what the git host's webhook does

    def model(self) -> tuple[str, str, str]:
        try:
            return state(self.argocd.application("bernini-model"))
        except ClusterError:  # its wave has not come yet
            return "", "", ""

    def wait_model(self, sync: str, health: str, what: str, timeout: float = 600) -> tuple[str, str, str]:
        return wait_for(lambda: (current := self.model())[:2] == (sync, health) and current, what,
                        timeout=timeout, interval=1, explain=lambda: str(self.model()))


@pytest.fixture(scope="module")
def tree(request, real_cluster, real_core, node_s3, published_versions, tmp_path_factory):
    """The example tree synced from empty git history; no operator process of the tests runs meanwhile."""
    with OperatorProcess.paused():
        root = tmp_path_factory.mktemp("gitops")
        apply(real_cluster, *destination_namespaces((MODELS, OPERATOR_NAMESPACE), node_s3))
        argocd = LocalArgoCD(real_cluster, root / "argocd", tied_to_parent=True)
        for _ in started(request, argocd):
            repositories = ExampleRepositories.create(
                root / "git", model_objects(real_cluster, node_s3, VERSIONS[0]),
                fit_operator_chart(real_cluster.node_layer.images["OPERATOR_IMAGE"], node_s3.endpoint_url))
            tree = Tree(argocd, repositories, real_cluster, node_s3)
            apply(real_cluster, repositories.root_application())
            yield tree
            _remove(real_cluster, real_core, argocd)


def _remove(real_cluster, real_core, argocd):
    """Argo CD stops first (it would re-create what is deleted); the model goes while its operator runs. The
    chart's cluster-scoped RBAC goes too: namespaces do not hold it, and a later install of the chart (helm, in
    test_monitoring) refuses to adopt objects another release made."""
    argocd.down()
    real_cluster.kubectl("delete", "applications.argoproj.io", "-n", "argocd", "--all", "--wait=false")
    real_cluster.kubectl("delete", "namespace", MODELS, "--timeout=180s")
    real_cluster.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--timeout=120s")
    real_cluster.kubectl("delete", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/name=bernini-operator")


def test_the_tree_syncs_in_order_and_turns_healthy_with_the_operator_running_from_its_chart(tree, real_core, real_custom):
    started = time.monotonic()
    tree.wait_model("Synced", "Healthy", "the model's Application Synced/Healthy")
    print(f"\nroot Application applied -> model Healthy in {time.monotonic() - started:.0f}s")
    applications = {a["metadata"]["name"]: state(a) for a in tree.argocd.applications()}
    assert {name: current[:2] for name, current in applications.items()} == {
        name: ("Synced", "Healthy") for name in ("bernini", "bernini-crds", "bernini-operator", "bernini-model")}

    pod, = helpers.pods(real_core, OPERATOR_NAMESPACE, "app.kubernetes.io/name=bernini-operator")
    assert pod.status.phase == "Running" and all(s.ready for s in pod.status.container_statuses)
    assert pod.spec.containers[0].image == tree.real_cluster.node_layer.images["OPERATOR_IMAGE"]
    body = helpers.deployment(real_custom, MODELS)
    assert body["status"]["modelVersion"] == VERSIONS[0]
    assert applications["bernini-model"][2] == helpers.condition(body, "Ready")["message"]
    status, headers, _ = wait_for(lambda: helpers.answer(real_core, MODELS), "a first mesh", timeout=180, interval=2)
    assert (status, headers.get("x-bernini-model-version")) == (200, VERSIONS[0])


def test_a_version_committed_to_git_rolls_out(tree, real_core, real_custom):
    tree.commit_model("bernini 1.1.0", VERSIONS[1])
    started = time.monotonic()
    wait_for(lambda: helpers.deployment(real_custom, MODELS)["metadata"]["generation"] > 1, "the commit applied",
             timeout=120, interval=1)
    print(f"\ncommit -> BerniniDeployment changed in {time.monotonic() - started:.0f}s")
    wait_for(lambda: (b := helpers.ready(real_custom, MODELS)) and b["status"].get("modelVersion") == VERSIONS[1],
             f"{VERSIONS[1]} serving", timeout=600, interval=2)
    print(f"commit -> {VERSIONS[1]} Ready in {time.monotonic() - started:.0f}s")
    tree.wait_model("Synced", "Healthy", "the model's Application Healthy again")
    status, headers, _ = helpers.generate(real_core, MODELS)
    assert (status, headers.get("x-bernini-model-version")) == (200, VERSIONS[1])


def test_broken_artifacts_turn_the_application_degraded_while_the_old_version_serves_and_a_revert_heals(
        tree, real_core, real_custom, node_s3_client, tmp_path):
    """The manifest stays valid, so the preflight (which reads only the manifest) passes; one graph's bytes do
    not: the new cluster's init container must stop it, and Argo CD must say so."""
    broken = "1.2.0-corrupt"
    stage = publish_with_a_corrupt_stage(node_s3_client, broken, tmp_path / "compiled")
    tree.commit_model("bernini 1.2.0", broken)
    started = time.monotonic()
    _, _, message = tree.wait_model("Synced", "Degraded", "Degraded from the operator's PodsHealthy")
    print(f"\ncorrupt artifact: commit -> Degraded in {time.monotonic() - started:.1f}s: {message}")
    assert message.startswith("InitContainerFailed: ") and "init container pull-artifacts exited 4" in message, message
    assert f"checksum mismatch for {stage.file}" in message, message

    body = helpers.deployment(real_custom, MODELS)
    assert helpers.condition(body, "ArtifactsVerified")["status"] == "True"
    assert helpers.condition(body, "Ready")["status"] == "True" and body["status"]["modelVersion"] == VERSIONS[1]
    pending = body["status"]["rayService"]["pendingCluster"]
    assert pending and pending != body["status"]["rayService"]["activeCluster"]
    workers = helpers.pods(real_core, MODELS, f"ray.io/cluster={pending},{helpers.ACCELERATED_WORKERS}")
    assert workers and all(pod.status.phase == "Pending" for pod in workers), "a worker with corrupt graphs started"
    events = real_core.list_namespaced_event(MODELS, field_selector="involvedObject.kind=BerniniDeployment").items
    assert any(event.reason == "InitContainerFailed" and event.type == "Warning" for event in events)
    status, headers, _ = helpers.generate(real_core, MODELS)
    assert (status, headers.get("x-bernini-model-version")) == (200, VERSIONS[1])

    tree.repositories.platform.revert_last()
    tree.argocd.refresh("bernini-model")
    tree.wait_model("Synced", "Healthy", "Healthy after the revert")
    assert helpers.deployment(real_custom, MODELS)["spec"]["model"]["version"] == VERSIONS[1]
    # KubeRay (NewCluster) does not simply drop the pending cluster when the spec returns to the active one's:
    # it replaces it with a new pending cluster of that spec, which takes over once ready.
    wait_for(lambda: helpers.deployment(real_custom, MODELS)["status"]["rayService"].get("pendingCluster") != pending,
             "the broken pending cluster replaced", timeout=300, interval=2)
    status, headers, _ = helpers.generate(real_core, MODELS)
    assert (status, headers.get("x-bernini-model-version")) == (200, VERSIONS[1])
    started = time.monotonic()
    wait_for(lambda: not helpers.deployment(real_custom, MODELS)["status"]["rayService"].get("pendingCluster"),
             "the replacement cluster to take over", timeout=600, interval=2)
    print(f"revert -> the replacement cluster took over in {time.monotonic() - started:.0f}s")


def test_a_hand_edit_of_the_rayservice_is_reverted_by_the_operator_and_argocd_sees_no_drift(tree, real_custom):
    before = helpers.rayservice(real_custom, MODELS)
    first, *others = before["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    replicas = first["maxReplicas"]
    # A merge patch replaces the whole list: every group goes back in, so only a bound changes (a dropped group
    # would start KubeRay's new-cluster upgrade, which the next test's suspend would meet half-way).
    real_custom.patch_namespaced_custom_object("ray.io", "v1", MODELS, "rayservices", "bernini",
                                               {"spec": {"rayClusterConfig": {"workerGroupSpecs": [
                                                   {**first, "maxReplicas": replicas + 5}, *others]}}})
    seen = []

    def reverted() -> bool:
        seen.append(tree.model()[0])
        current = helpers.rayservice(real_custom, MODELS)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        return current["maxReplicas"] == replicas

    wait_for(reverted, "the operator to revert the hand edit", timeout=60, interval=0.5)
    time.sleep(5)  # Argo CD's next look at the tree
    seen.append(tree.model()[0])
    assert set(seen) == {"Synced"}, seen


def test_suspend_through_git_shows_suspended_in_argocd(tree, real_core, real_custom):
    tree.commit_model("suspend bernini", VERSIONS[1], suspend=True)
    _, _, message = tree.wait_model("Synced", "Suspended", "Suspended in Argo CD", timeout=180)
    assert message == helpers.condition(helpers.deployment(real_custom, MODELS), "Ready")["message"]
    wait_for(lambda: not helpers.pods(real_core, MODELS, "ray.io/is-ray-node=yes"), "every Ray pod gone",
             timeout=180, interval=2)
    # The parent passes the child's health on, so the whole tree reads Suspended, not Degraded.
    wait_for(lambda: state(tree.argocd.application("bernini"))[:2] == ("Synced", "Suspended"), "the tree Suspended",
             timeout=60, interval=1)
