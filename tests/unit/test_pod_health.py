"""Reading why a starting RayCluster's pods fail, from pod statuses as the kubelet writes them."""

from bernini.api.kuberay import rayservice_status
from bernini.api.reasons import Cause
from bernini.api.status import read_back
from bernini.artifacts.preflight import Preflight
from bernini.reconcile.pod_health import diagnose
from bernini.reconcile.status import Observation, desired_status
from bernini.render.capacity import plan
from tests.unit.specs import make_manifest, make_spec

CHECKSUM_LINE = "bernini artifacts pull: diffusion.pt: sha256 mismatch (expected 0f.., got 9a..)"


def _pod(name, phase="Pending", init=None, containers=None):
    return {"metadata": {"name": name}, "status": {"phase": phase, "initContainerStatuses": init or [],
                                                    "containerStatuses": containers or []}}


def _init_crashlooping(exit_code=4):
    return [{"name": "pull-artifacts", "restartCount": 3,
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
             "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error",
                                          "message": f"pulling...\n{CHECKSUM_LINE}\n"}}}]


def test_a_crashlooping_puller_is_named_with_its_exit_code_and_last_words():
    trouble = diagnose([_pod("b-worker"), _pod("a-worker", init=_init_crashlooping())])
    assert trouble.reason == "InitContainerFailed"
    assert trouble.message.startswith("pod a-worker (Pending): init container pull-artifacts exited 4")
    assert "CrashLoopBackOff after 3 restarts" in trouble.message
    assert trouble.message.endswith(CHECKSUM_LINE)


def test_stuck_waiting_reasons_are_trouble_and_normal_start_up_is_not():
    pulling = [{"name": "ray-worker", "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "serving:9"'}}}]
    creating = [{"name": "ray-worker", "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]
    assert diagnose([_pod("w", containers=creating)]) is None
    assert diagnose([_pod("w")]) is None  # unscheduled, waiting for a node: what autoscaling expects
    trouble = diagnose([_pod("w", containers=pulling)])
    assert (trouble.reason, trouble.message) == ("ImagePullBackOff", 'pod w (Pending): container ray-worker is waiting: ImagePullBackOff: Back-off pulling image "serving:9"')
    completed = [{"name": "pull-artifacts", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
    assert diagnose([_pod("w", "Running", init=completed)]) is None


def test_a_failed_pod_without_container_detail_is_named_by_its_phase():
    pod = _pod("w", "Failed")
    pod["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    assert diagnose([pod]).reason == "PodFailed"
    assert "Evicted The node was low" in diagnose([pod]).message


UPGRADING = {"metadata": {"name": "bernini"}, "status": {
    "conditions": [{"type": "Ready", "status": "True", "reason": "RunningServeApps"}],
    "activeServiceStatus": {"rayClusterName": "bernini-old"},
    "pendingServiceStatus": {"rayClusterName": "bernini-new"},
}}


def starting_clusters(rayservice):
    return rayservice_status(rayservice).starting_clusters


def test_pods_are_looked_at_only_while_a_cluster_starts():
    assert starting_clusters(UPGRADING) == ["bernini-new"]
    serving = {"status": {**UPGRADING["status"], "pendingServiceStatus": {}}}
    assert starting_clusters(serving) == []
    first_deploy = {"status": {"conditions": [{"type": "Ready", "status": "False"}], "pendingServiceStatus": {"rayClusterName": "bernini-new"}}}
    assert starting_clusters(first_deploy) == ["bernini-new"]
    broken = {"status": {"conditions": [{"type": "Ready", "status": "False"}], "activeServiceStatus": {"rayClusterName": "bernini-old"}}}
    assert starting_clusters(broken) == ["bernini-old"]


def _conditions(rayservice, trouble):
    spec = make_spec(model={"version": "2.0.0"})
    seen = Observation(2, Preflight(True, Cause("Verified", "ok"), make_manifest("2.0.0"), "f" * 64), plan(spec), None,
                       rayservice_status(rayservice), None, trouble)
    status = desired_status("bernini", "models", spec, seen, read_back({}), "now")[0]
    return {c["type"]: c for c in status["conditions"]}


def test_a_stuck_upgrade_keeps_ready_and_says_why_while_a_stuck_first_deploy_is_not_ready():
    trouble = diagnose([_pod("bernini-new-worker", init=_init_crashlooping())])
    upgrading = _conditions(UPGRADING, trouble)
    assert (upgrading["PodsHealthy"]["status"], upgrading["PodsHealthy"]["reason"]) == ("False", "InitContainerFailed")
    assert upgrading["Ready"]["status"] == "True"
    assert "the next cluster is not starting: pod bernini-new-worker" in upgrading["Ready"]["message"]
    first = _conditions({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Initializing"}]}}, trouble)
    assert (first["Ready"]["status"], first["Ready"]["reason"]) == ("False", "InitContainerFailed")
    healthy = _conditions(UPGRADING, None)
    assert (healthy["PodsHealthy"]["status"], healthy["Ready"]["message"]) == ("True", "artifacts verified and the RayService is ready")
