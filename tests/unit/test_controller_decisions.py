"""The controller's decisions, made by its real reconcile code (and a real Kube) against an in-memory API server
(tests/fake_kube.py) and an in-memory store (tests/fake_stores.py): milliseconds each. tests/integration makes
the same decisions against a real control plane, and so proves the API server answers as the fake does."""

import asyncio
import copy
import json
import logging

import pytest

from bernini.api.kuberay import ORIGINATED_FROM_CRD
from bernini.artifacts import preflight
from bernini.artifacts.guarded_store import StoreFailure
from bernini.artifacts.preflight import ManifestReader
from bernini.reconcile.controller import Controller
from bernini.reconcile.policy import Policy
from bernini.render import rollback
from bernini.render.names import MANAGER, VERSION_LABEL
from tests.fake_kube import FakeCluster
from tests.fake_stores import InMemoryStore
from tests.unit.specs import make_manifest

NAMESPACE, NAME = "tenant", "bernini"
KEY = (NAMESPACE, NAME)
URI = "s3://bucket/bernini/1.0.0/"
PREWARM = "bernini-prewarm"
PREWARMING = {"artifactsCache": {"claimName": "bernini-cache", "prewarm": True}}
DENIAL = "RayServices in this namespace need the platform team's approval"
FOREIGN_RAYSERVICE = {"apiVersion": "ray.io/v1", "kind": "RayService",
                      "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"team": "other"}},
                      "spec": {"serveConfigV2": "applications: []\n"}}
FOREIGN_DAEMONSET = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": PREWARM, "namespace": NAMESPACE},
                     "spec": {"template": {"spec": {"containers": [{"name": "theirs", "image": "theirs:1"}]}}}}


def deployment(**spec) -> dict:
    return {"apiVersion": "bernini.dev/v1alpha1", "kind": "BerniniDeployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"model": {"version": "1.0.0", "artifactsUri": URI}, "runtime": {"image": "serving:1"}, **spec}}


@pytest.fixture
def store(monkeypatch) -> InMemoryStore:
    store = InMemoryStore()
    store.publish(make_manifest(), URI)
    monkeypatch.setattr(preflight, "GuardedStore", store)
    monkeypatch.setattr(preflight, "Credentials", lambda: None)  # the store needs none; a botocore session costs ~50 ms
    return store


@pytest.fixture
def cluster(store) -> FakeCluster:  # with the store patched in: no test dials a real one
    return FakeCluster()


def operator(cluster: FakeCluster, body: dict | None = None, policy: Policy = Policy()) -> Controller:
    """The BerniniDeployment created, and a controller over the fake that re-reads the store on every reconcile."""
    cluster.create(body or deployment())
    return Controller(cluster.kube(), ManifestReader(cache_seconds=0), policy=policy)


def deliver(controller: Controller, cluster: FakeCluster) -> None:
    """What the watches deliver, filtered as handlers.py watches."""
    for body in cluster.listed("berninideployments"):
        controller.observe_deployment("MODIFIED", body)
    for body in cluster.listed("rayservices"):
        if body["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == MANAGER:
            controller.observe_rayservice("MODIFIED", body)
    for body in cluster.listed("rayclusters"):
        labels = body["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/managed-by") == MANAGER and labels.get(ORIGINATED_FROM_CRD) == "RayService":
            controller.observe_raycluster("MODIFIED", body)


def reconcile(controller: Controller, cluster: FakeCluster) -> str | None:
    deliver(controller, cluster)
    return controller.reconcile(KEY)


def with_workers(controller: Controller, *steps) -> None:
    """The controller's own workers (queue, error handling, back-off) on one event loop: each step() runs, then
    the queue drains. A step that adds KEY again stands for the back-off's timer (1 s and more)."""
    async def run():
        controller.start()
        try:
            for step in steps:
                step()
                async with asyncio.timeout(5):
                    while controller.queue:
                        await asyncio.sleep(0.001)
        finally:
            await controller.stop()
    asyncio.run(run())


def edit_spec(cluster: FakeCluster, **spec) -> None:
    cluster.edit("berninideployments", NAMESPACE, NAME, {"spec": spec})


def condition(cluster: FakeCluster, kind: str) -> dict:
    status = cluster.get("berninideployments", NAMESPACE, NAME).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def rayservice(cluster: FakeCluster) -> dict | None:
    return cluster.get("rayservices", NAMESPACE, NAME)


def daemonset(cluster: FakeCluster) -> dict | None:
    return cluster.get("daemonsets", NAMESPACE, PREWARM)


def warned(cluster: FakeCluster, reason: str) -> bool:
    """One Warning of reason was posted, though the reason turned two conditions (its own and Ready)."""
    events = cluster.events_for(reason)
    return [event["type"] for event in events] == ["Warning"]


def uid(cluster: FakeCluster) -> str:
    return cluster.get("berninideployments", NAMESPACE, NAME)["metadata"]["uid"]


# -- converging the RayService ---------------------------------------------------------------------


def test_a_new_deployment_gets_a_rayservice_it_controls_and_an_idle_reconcile_writes_nothing(cluster):
    controller = operator(cluster)
    assert reconcile(controller, cluster) is None
    owners = rayservice(cluster)["metadata"]["ownerReferences"]
    assert [(owner["uid"], owner["controller"]) for owner in owners] == [(uid(cluster), True)]
    assert cluster.managers("rayservices", NAMESPACE, NAME) == {MANAGER}
    assert (condition(cluster, "Rendered")["status"], condition(cluster, "Rendered")["reason"]) == ("True", "Applied")
    written = len(cluster.writes)
    assert reconcile(controller, cluster) is None
    assert cluster.writes[written:] == [], "an idle reconcile wrote"


def test_a_hand_edit_of_its_rayservice_is_taken_back(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    rendered = rayservice(cluster)["spec"]["serveConfigV2"]
    cluster.edit("rayservices", NAMESPACE, NAME, {"spec": {"serveConfigV2": "edited"}}, manager="kubectl-edit")
    assert reconcile(controller, cluster) is None
    assert rayservice(cluster)["spec"]["serveConfigV2"] == rendered
    assert cluster.managers("rayservices", NAMESPACE, NAME) == {MANAGER}


def test_a_foreign_rayservice_of_its_name_is_never_written(cluster):
    before = cluster.create(FOREIGN_RAYSERVICE, manager="tenant")
    controller = operator(cluster)
    assert reconcile(controller, cluster) is None
    assert (condition(cluster, "Rendered")["status"], condition(cluster, "Rendered")["reason"]) == ("False", "NameConflict")
    assert condition(cluster, "Ready")["status"] == "False"
    assert warned(cluster, "NameConflict")
    assert rayservice(cluster) == before


def test_a_rayservice_created_between_the_read_and_the_create_conflicts_and_is_not_taken_over(cluster):
    controller = operator(cluster)
    cluster.just_before_next_write(lambda: cluster.create(FOREIGN_RAYSERVICE, manager="tenant"))
    assert reconcile(controller, cluster) is None
    assert condition(cluster, "Rendered")["reason"] == "NameConflict"
    assert MANAGER not in cluster.managers("rayservices", NAMESPACE, NAME)
    assert "ownerReferences" not in rayservice(cluster)["metadata"]


def test_a_rayservice_replaced_between_the_read_and_the_update_is_not_taken_over(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    edit_spec(cluster, runtime={"image": "serving:2"})  # so the reconcile wants to apply

    def replaced():
        cluster.delete("rayservices", NAMESPACE, NAME)
        cluster.create(FOREIGN_RAYSERVICE, manager="tenant")
    cluster.just_before_next_write(replaced)
    assert reconcile(controller, cluster) is None
    assert condition(cluster, "Rendered")["reason"] == "NameConflict"
    assert rayservice(cluster)["spec"] == FOREIGN_RAYSERVICE["spec"]
    assert MANAGER not in cluster.managers("rayservices", NAMESPACE, NAME)


def test_an_apply_admission_refuses_is_a_condition_an_event_and_a_retry_until_allowed(cluster):
    cluster.deny("rayservices", DENIAL)
    controller = operator(cluster)
    assert reconcile(controller, cluster) == "ApplyRefused", "not retried"
    rendered = condition(cluster, "Rendered")
    assert (rendered["status"], rendered["reason"]) == ("False", "ApplyRefused") and DENIAL in rendered["message"]
    assert condition(cluster, "Ready")["reason"] == "ApplyRefused"
    assert condition(cluster, "ArtifactsVerified")["status"] == "True"
    assert warned(cluster, "ApplyRefused")
    assert rayservice(cluster) is None
    cluster.allow("rayservices")
    assert reconcile(controller, cluster) is None
    assert condition(cluster, "Rendered")["status"] == "True" and rayservice(cluster) is not None


def test_without_kuberay_the_deployment_says_so_and_converges_once_it_is_installed(cluster):
    cluster.unserve("rayservices")
    controller = operator(cluster)
    assert reconcile(controller, cluster) == "RayServiceAPIMissing"
    assert "install KubeRay" in condition(cluster, "Rendered")["message"]
    cluster.unserved.discard("rayservices")  # KubeRay installed
    assert reconcile(controller, cluster) is None
    assert rayservice(cluster) is not None


def test_a_new_deployment_costs_one_create_and_one_status_patch_and_reads_nothing(cluster):
    controller = operator(cluster)
    controller.observe_deployment("ADDED", cluster.get("berninideployments", NAMESPACE, NAME))
    controller.reconcile(KEY)
    deliver(controller, cluster)  # our own writes come back through the watches
    controller.reconcile(KEY)
    assert cluster.reads == []
    assert cluster.writes == [("create", "rayservices", NAME), ("patch", "berninideployments/status", NAME)]
    assert rayservice(cluster)["metadata"]["ownerReferences"][0]["uid"] == uid(cluster)


def test_the_watch_bringing_back_our_own_writes_queues_no_reconcile_and_anyone_elses_change_does(cluster):
    controller = operator(cluster)
    controller.observe_deployment("ADDED", cluster.get("berninideployments", NAMESPACE, NAME))
    with_workers(controller, lambda: None)  # the first reconcile: a RayService created, status written
    assert cluster.writes and not controller.queue
    deliver(controller, cluster)  # both come back
    assert not controller.queue
    cluster.edit("berninideployments", NAMESPACE, NAME, {"status": {"modelVersion": "9.9.9"}}, manager="someone")
    deliver(controller, cluster)
    assert len(controller.queue) == 1, "a status someone else wrote is put back by a reconcile"
    with_workers(controller, lambda: None)
    cluster.edit("rayservices", NAMESPACE, NAME, {"spec": {"serveConfigV2": "edited"}}, manager="someone")
    deliver(controller, cluster)
    assert len(controller.queue) == 1, "so is a hand edit of the RayService"


def test_a_new_deployments_create_never_merges_into_a_rayservice_of_that_name(cluster):
    cluster.create({**FOREIGN_RAYSERVICE, "spec": {}})  # nothing our fields could conflict with
    controller = operator(cluster)
    controller.observe_deployment("ADDED", cluster.get("berninideployments", NAMESPACE, NAME))
    controller.reconcile(KEY)
    assert condition(cluster, "Rendered")["reason"] == "NameConflict"
    assert rayservice(cluster)["spec"] == {} and "ownerReferences" not in rayservice(cluster)["metadata"]
    cluster.reads.clear()
    controller.reconcile(KEY)  # known now: read first, and nothing written to it
    assert cluster.reads[0] == ("rayservices", NAME) and ("apply", "rayservices", NAME) not in cluster.writes


def test_a_new_deployment_whose_rayservice_the_cache_has_not_seen_yet_is_updated_not_refused(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    edit_spec(cluster, suspend=True)
    fresh = Controller(cluster.kube(), ManifestReader(cache_seconds=0))  # a restart, before its RayService arrives
    fresh.observe_deployment("ADDED", cluster.get("berninideployments", NAMESPACE, NAME))
    assert fresh.reconcile(KEY) is None
    assert condition(cluster, "Rendered")["status"] == "True"
    assert rayservice(cluster)["spec"]["rayClusterConfig"]["suspend"] is True


def test_the_first_update_of_a_rayservice_our_create_made_hands_its_fields_to_the_applier_once(cluster):
    controller = operator(cluster)
    entries = lambda: [(e["manager"], e["operation"]) for e in rayservice(cluster)["metadata"]["managedFields"]]  # noqa: E731
    reconcile(controller, cluster)
    assert entries() == [(MANAGER, "Update")]
    for image in ("serving:2", "serving:3"):
        edit_spec(cluster, runtime={"image": image})
        cluster.writes.clear()
        reconcile(controller, cluster)
        handed = [("patch", "rayservices", NAME)] if image == "serving:2" else []
        assert cluster.writes[:len(handed) + 1] == handed + [("apply", "rayservices", NAME)]
    assert entries() == [(MANAGER, "Apply")]


def test_another_managers_write_moving_our_entry_before_the_handover_is_found_again_not_refused(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    edit_spec(cluster, runtime={"image": "serving:2"})
    live = cluster.objects[("rayservices", NAMESPACE, NAME)]
    moved = lambda: live["metadata"]["managedFields"].insert(  # noqa: E731
        0, {"manager": "kuberay", "operation": "Apply"})  # the API server sorts Apply entries first
    cluster.just_before_next_write(moved)
    assert reconcile(controller, cluster) is None
    assert condition(cluster, "Rendered")["status"] == "True"
    assert [(e["manager"], e["operation"]) for e in rayservice(cluster)["metadata"]["managedFields"]] == [
        ("kuberay", "Apply"), (MANAGER, "Apply")]


def test_a_deployment_deleted_while_no_event_said_so_is_forgotten_not_resurrected(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    cluster.delete("berninideployments", NAMESPACE, NAME)  # a watch relist sends no DELETED
    cluster.delete("rayservices", NAMESPACE, NAME)  # the garbage collector follows the owner
    controller.observe_rayservice("DELETED", {**FOREIGN_RAYSERVICE, "metadata": {
        "name": NAME, "namespace": NAMESPACE, "ownerReferences": [
            {"kind": "BerniniDeployment", "name": NAME, "controller": True}]}})
    assert controller.reconcile(KEY) is None
    assert rayservice(cluster) is None
    assert KEY not in controller.deployments


def test_a_deployment_deleted_before_its_first_reconcile_and_missing_from_a_relist_is_not_created(cluster):
    controller = operator(cluster)
    deliver(controller, cluster)
    cluster.delete("berninideployments", NAMESPACE, NAME)
    other = cluster.create({**deployment(), "metadata": {"name": "other", "namespace": NAMESPACE}})
    controller.observe_deployment(None, other)  # kopf lists again after 410 Gone: the deleted one is not in it
    assert controller.reconcile(KEY) is None
    assert rayservice(cluster) is None
    assert KEY not in controller.deployments


def pod(cluster_name: str, name: str, waiting: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"ray.io/cluster": cluster_name}},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "ray-worker", "state": {"waiting": {"reason": waiting}}, "restartCount": 3}]}}


def test_a_failing_pod_of_the_starting_cluster_is_why_it_is_not_ready(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    cluster.edit("rayservices", NAMESPACE, NAME, {"status": {"pendingServiceStatus": {"rayClusterName": "bernini-x7k2p"}}},
                 manager="kuberay")
    cluster.create(pod("bernini-x7k2p", "bernini-x7k2p-worker-0", "ImagePullBackOff"), manager="kubelet")
    cluster.create(pod("someone-else", "a-pod-sorted-first", "CrashLoopBackOff"), manager="kubelet")
    reconcile(controller, cluster)
    pods = condition(cluster, "PodsHealthy")
    assert (pods["status"], pods["reason"]) == ("False", "ImagePullBackOff") and "bernini-x7k2p-worker-0" in pods["message"]
    assert condition(cluster, "Ready")["reason"] == "ImagePullBackOff"


# -- refused writes, through the controller's own workers -------------------------------------------


def test_a_refused_status_patch_is_one_warning_event_and_a_retry_until_written(cluster):
    cluster.deny("berninideployments/status", DENIAL)
    controller = operator(cluster)
    failures = []

    def retry():
        failures.append(controller._failures.get(KEY, 0))
        controller.queue.add(KEY)

    def lift_and_retry():
        cluster.allow("berninideployments/status")
        retry()
    with_workers(controller, lambda: deliver(controller, cluster), retry, lift_and_retry)
    assert failures == [1, 2], "each refusal is one more failure of the back-off"
    events = cluster.events_for("StatusRefused")
    assert len(events) == 1 and events[0]["type"] == "Warning" and DENIAL in events[0]["message"]
    assert condition(cluster, "Ready"), "the status was never written"
    assert KEY not in controller._failures, "the success did not reset the back-off"


def test_a_create_in_a_terminating_namespace_ends_the_reconcile_without_retries(cluster, caplog):
    controller = operator(cluster)
    cluster.terminate(NAMESPACE)
    resync = lambda: controller.queue.add(KEY)  # noqa: E731  a later pass finds the same namespace
    with caplog.at_level(logging.DEBUG, logger="bernini.controller"):
        with_workers(controller, lambda: deliver(controller, cluster), resync)
    assert KEY not in controller._failures, "the refusal was retried"
    assert condition(cluster, "Rendered").get("reason") != "ApplyRefused", "a dying namespace is no refusal"
    assert rayservice(cluster) is None
    assert "namespace is being deleted" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.text


def test_a_replica_not_leading_writes_nothing_counts_no_failure_and_writes_once_it_leads(cluster, caplog):
    controller = operator(cluster)
    leading = False
    controller.kube.may_write = lambda: leading

    def leads_again():
        nonlocal leading
        leading = True
        controller.queue.add(KEY)  # as the busy retry's timer does
    with caplog.at_level(logging.INFO, logger="bernini.controller"):
        with_workers(controller, lambda: deliver(controller, cluster))
        assert cluster.writes == [] and cluster.events == []
        assert KEY not in controller._failures
        assert "leadership is in doubt" in caplog.text
        with_workers(controller, leads_again)
    assert rayservice(cluster) is not None and condition(cluster, "Ready")


# -- policy and preflight ----------------------------------------------------------------------------


def test_an_endpoint_outside_the_policy_is_denied_never_dialled_and_leaves_the_rayservice_alone(cluster, store):
    allowed = "https://s3.us-east-1.amazonaws.com"
    controller = operator(cluster, deployment(s3={"endpointUrl": allowed}), Policy(endpoints=(allowed,)))
    reconcile(controller, cluster)
    before, reads = rayservice(cluster), store.reads
    assert before is not None and reads
    edit_spec(cluster, s3={"endpointUrl": "https://s3.elsewhere.example.com"})
    assert reconcile(controller, cluster) is None
    ready = condition(cluster, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PolicyDenied") and "spec.s3.endpointUrl" in ready["message"]
    assert condition(cluster, "Rendered")["reason"] == "BlockedByPreflight"
    assert store.reads == reads, "an endpoint the policy refuses was dialled"
    assert rayservice(cluster) == before
    assert warned(cluster, "PolicyDenied")


def test_a_store_outage_keeps_the_last_verified_artifacts_and_edits_still_roll_out(cluster, store):
    controller = operator(cluster)
    reconcile(controller, cluster)
    store.failing = StoreFailure("unreachable", "ConnectionRefused", "connection refused")
    reads = store.reads
    edit_spec(cluster, runtime={"image": "serving:2"})
    assert reconcile(controller, cluster) is None
    assert store.reads > reads, "the store was not asked again"
    verified = condition(cluster, "ArtifactsVerified")
    assert verified["status"] == "True" and "the last re-check failed, kept" in verified["message"]
    assert "serving:2" in json.dumps(rayservice(cluster)["spec"])


def test_artifacts_gone_from_the_store_block_the_rollout_and_leave_the_rayservice_alone(cluster, store):
    controller = operator(cluster)
    reconcile(controller, cluster)
    before = rayservice(cluster)
    store.objects.clear()  # the store answers, and the manifest verified before is not there
    edit_spec(cluster, runtime={"image": "serving:2"})
    assert reconcile(controller, cluster) is None
    verified = condition(cluster, "ArtifactsVerified")
    assert (verified["status"], verified["reason"]) == ("False", "ManifestNotFound")
    assert condition(cluster, "Rendered")["reason"] == "BlockedByPreflight"
    assert rayservice(cluster) == before
    assert warned(cluster, "ManifestNotFound")


# -- the pre-warm DaemonSet ---------------------------------------------------------------------------


def serving(cluster: FakeCluster, version: str) -> None:
    """KubeRay's side: the RayService Ready on an active RayCluster whose pods carry version."""
    cluster.create({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                    "metadata": {"name": "bernini-x7k2p", "namespace": NAMESPACE},
                    "spec": {"headGroupSpec": {"template": {"metadata": {"labels": {VERSION_LABEL: version}}}}}},
                   manager="kuberay")
    cluster.edit("rayservices", NAMESPACE, NAME, {"status": {
        "activeServiceStatus": {"rayClusterName": "bernini-x7k2p"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}}, manager="kuberay")


def test_the_prewarm_daemonset_is_applied_while_the_version_rolls_out_and_only_once(cluster):
    controller = operator(cluster, deployment(**PREWARMING))
    reconcile(controller, cluster)
    owners = daemonset(cluster)["metadata"]["ownerReferences"]
    assert [(owner["uid"], owner["controller"]) for owner in owners] == [(uid(cluster), True)]
    assert cluster.managers("daemonsets", NAMESPACE, PREWARM) == {MANAGER}
    written = len(cluster.writes)
    reconcile(controller, cluster)
    assert cluster.writes[written:] == [], "an unchanged pre-warm DaemonSet was written again"


@pytest.mark.parametrize("rollout_ends", [
    lambda cluster: serving(cluster, "1.0.0"),
    lambda cluster: edit_spec(cluster, suspend=True),
], ids=["the version serves", "suspended"])
def test_the_prewarm_daemonset_goes_when_nothing_rolls_out(cluster, rollout_ends):
    controller = operator(cluster, deployment(**PREWARMING))
    reconcile(controller, cluster)
    assert daemonset(cluster) is not None
    rollout_ends(cluster)
    reconcile(controller, cluster)
    assert daemonset(cluster) is None


def test_after_a_restart_a_prewarm_daemonset_left_behind_is_deleted_once_the_version_serves(cluster):
    reconcile(operator(cluster, deployment(**PREWARMING)), cluster)
    assert daemonset(cluster) is not None
    serving(cluster, "1.0.0")  # while no operator runs
    restarted = Controller(cluster.kube(), ManifestReader(cache_seconds=0))
    reconcile(restarted, cluster)
    assert daemonset(cluster) is None
    assert cluster.get("berninideployments", NAMESPACE, NAME)["status"]["modelVersion"] == "1.0.0"


def test_a_tenants_daemonset_of_the_prewarm_name_is_never_applied_over_nor_deleted(cluster):
    before = cluster.create(FOREIGN_DAEMONSET, manager="tenant")
    controller = operator(cluster, deployment(**PREWARMING))
    reconcile(controller, cluster)
    reconcile(controller, cluster)
    edit_spec(cluster, suspend=True)
    reconcile(controller, cluster)
    assert daemonset(cluster) == before
    events = cluster.events_for("PrewarmNameConflict")
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert "not controlled by this BerniniDeployment" in events[0]["message"]


def test_a_refused_prewarm_daemonset_is_one_event_and_the_rollout_goes_on(cluster):
    cluster.deny("daemonsets", DENIAL)
    controller = operator(cluster, deployment(**PREWARMING))
    assert reconcile(controller, cluster) is None
    assert condition(cluster, "Rendered")["status"] == "True" and rayservice(cluster) is not None
    reconcile(controller, cluster)  # a resync does not retry a refusal of the same DaemonSet
    events = cluster.events_for("PrewarmRefused")
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert DENIAL in events[0]["message"] and PREWARM in events[0]["message"]
    assert daemonset(cluster) is None


# -- worker-group bounds on the running RayCluster ----------------------------------------------------


def kuberay_cluster(cluster: FakeCluster, name: str, inf2_pods: int, other_pods: int = 1) -> None:
    """KubeRay's RayCluster made from the RayService as it is now; its inf2 group asks inf2_pods and every other
    group other_pods (the Ray autoscaler's replicas)."""
    groups = copy.deepcopy(rayservice(cluster)["spec"]["rayClusterConfig"]["workerGroupSpecs"])
    for group in groups:
        group["replicas"] = inf2_pods if group["groupName"] == "inf2-xlarge" else other_pods
    owner = rayservice(cluster)
    labels = {**owner["metadata"]["labels"], ORIGINATED_FROM_CRD: "RayService", "ray.io/originated-from-cr-name": NAME}
    reference = {"apiVersion": "ray.io/v1", "kind": "RayService", "name": NAME, "uid": owner["metadata"]["uid"],
                 "controller": True}
    spec = {**copy.deepcopy(owner["spec"]["rayClusterConfig"]), "workerGroupSpecs": groups}
    cluster.create({"apiVersion": "ray.io/v1", "kind": "RayCluster",
                    "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels, "ownerReferences": [reference]},
                    "spec": spec}, manager="kuberay")


def running_cluster(cluster: FakeCluster, pending: bool = False) -> str:
    """KubeRay's side: the RayCluster made from the RayService as it is now, with the autoscaler's replicas,
    serving (or, pending, still starting beside another)."""
    name = "bernini-next" if pending else "bernini-x7k2p"
    kuberay_cluster(cluster, name, 3, 3)
    sides = {"pendingServiceStatus": {"rayClusterName": name}, "activeServiceStatus": {"rayClusterName": "old"}} \
        if pending else {"activeServiceStatus": {"rayClusterName": name}}
    cluster.edit("rayservices", NAMESPACE, NAME, {"status": {
        **sides, "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}}, manager="kuberay")
    return name


def group_bounds(cluster: FakeCluster, name: str) -> list[tuple[int, int, int]]:
    return [(g["minReplicas"], g["maxReplicas"], g["replicas"])
            for g in cluster.get("rayclusters", NAMESPACE, name)["spec"]["workerGroupSpecs"]]


def test_changed_bounds_reach_the_running_raycluster_and_only_its_min_and_max(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    name = running_cluster(cluster)
    (low, high, _), cpu_group = group_bounds(cluster, name)
    reconcile(controller, cluster)
    assert ("patch", "rayclusters", name) not in cluster.writes, "bounds that agree are not written"
    edit_spec(cluster, stages={"fused": {"maxReplicas": 12}})
    reconcile(controller, cluster)
    (new_low, new_high, replicas), new_cpu_group = group_bounds(cluster, name)
    assert new_cpu_group == cpu_group, "the CPU group's bounds did not change"
    assert (new_low, replicas) == (low, 3) and new_high > high, "only the bounds change; replicas are the autoscaler's"
    assert new_high == rayservice(cluster)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"]
    reconcile(controller, cluster)  # the patched RayCluster's event: its wider bounds keep more pods, which cost
    written = len(cluster.writes)
    reconcile(controller, cluster)
    assert cluster.writes[written:] == [], "an idle reconcile reads and writes no RayCluster"


def test_while_kuberay_switches_clusters_neither_is_patched(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    active = running_cluster(cluster)
    pending = running_cluster(cluster, pending=True)
    cluster.edit("rayservices", NAMESPACE, NAME, {"status": {"activeServiceStatus": {"rayClusterName": active}}})
    edit_spec(cluster, stages={"fused": {"maxReplicas": 12}})
    reconcile(controller, cluster)
    assert not {("patch", "rayclusters", active), ("patch", "rayclusters", pending)} & set(cluster.writes)


def test_an_autoscaler_write_between_the_read_and_the_patch_is_kept_and_the_bounds_follow_next_time(cluster):
    controller = operator(cluster)
    reconcile(controller, cluster)
    name = running_cluster(cluster)
    edit_spec(cluster, stages={"fused": {"maxReplicas": 12}})
    read = controller.kube.read_raycluster

    def read_then_the_autoscaler_writes(namespace, cluster_name):
        live = read(namespace, cluster_name)
        cluster.edit("rayclusters", namespace, cluster_name, {"metadata": {"annotations": {"autoscaler": "wrote"}}},
                     manager="autoscaler")
        return live
    controller.kube.read_raycluster = read_then_the_autoscaler_writes
    assert reconcile(controller, cluster) is None, "a lost race is no failure"
    assert ("patch", "rayclusters", name) not in cluster.writes
    controller.kube.read_raycluster = read
    reconcile(controller, cluster)
    assert group_bounds(cluster, name)[0][1] == rayservice(cluster)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"]


# -- status.cost from the worker pods KubeRay keeps -------------------------------------------------


def cost_workers(cluster: FakeCluster) -> dict[str, int]:
    status = cluster.get("berninideployments", NAMESPACE, NAME)["status"]
    return {t["instanceType"]: t["workers"] for t in status["cost"]["instanceTypes"]}


def set_replicas(cluster: FakeCluster, name: str, replicas: list[int]) -> dict:
    groups = cluster.get("rayclusters", NAMESPACE, name)["spec"]["workerGroupSpecs"]
    for group, count in zip(groups, replicas):
        group["replicas"] = count
    cluster.edit("rayclusters", NAMESPACE, name, {"spec": {"workerGroupSpecs": groups}}, manager="autoscaler")
    return cluster.get("rayclusters", NAMESPACE, name)


def test_status_cost_follows_the_autoscaler_to_zero_accelerator_workers_per_group(cluster):
    controller = operator(cluster, deployment(stages={"fused": {"minReplicas": 0, "maxReplicas": 4}}))
    reconcile(controller, cluster)
    name = running_cluster(cluster)
    reconcile(controller, cluster)
    held = [min(max(replicas, low), high) for low, high, replicas in group_bounds(cluster, name)]
    assert held[0] < 3 and cost_workers(cluster) == {"inf2.xlarge": held[0], "m6i.xlarge": held[1]}, \
        "the autoscaler's replicas (3), held within each group's bounds"
    # The autoscaler scales the accelerator group to zero: only the RayCluster says so, KubeRay's RayService
    # status does not change.
    with_workers(controller, lambda: None)  # drains what the deliveries queued
    controller.observe_raycluster("MODIFIED", set_replicas(cluster, name, [0, held[1]]))
    assert len(controller.queue) == 1, "a change of worker pods queues a reconcile"
    reconcile(controller, cluster)
    assert cost_workers(cluster) == {"inf2.xlarge": 0, "m6i.xlarge": held[1]}
    status = cluster.get("berninideployments", NAMESPACE, NAME)["status"]
    assert status["cost"]["currentDollarsPerHour"] == status["cost"]["instanceTypes"][1]["dollarsPerHour"] > 0


def test_a_raycluster_event_that_changes_no_count_queues_nothing_and_one_not_named_by_the_rayservice_is_not_paid_for(
        cluster):
    controller = operator(cluster, deployment(stages={"fused": {"minReplicas": 0, "maxReplicas": 4}}))
    reconcile(controller, cluster)
    name = running_cluster(cluster)
    reconcile(controller, cluster)
    before = cost_workers(cluster)
    with_workers(controller, lambda: None)  # drains what the deliveries queued
    live = cluster.get("rayclusters", NAMESPACE, name)
    controller.observe_raycluster("MODIFIED", {**live, "status": {"state": "ready"}})
    assert len(controller.queue) == 0
    # Anyone who may create a RayCluster may make it look like KubeRay's, and name any group.
    forged = copy.deepcopy(live)
    forged["metadata"]["name"] = "forged"
    forged["spec"]["workerGroupSpecs"][0]["minReplicas"] = 40
    cluster.create(forged)
    unowned = copy.deepcopy(forged)
    unowned["metadata"].update(name="unowned", ownerReferences=[])
    oversized = copy.deepcopy(live)
    oversized["metadata"]["name"] = "oversized"
    oversized["spec"]["workerGroupSpecs"] *= 100
    controller.observe_raycluster("ADDED", unowned)
    controller.observe_raycluster("ADDED", oversized)
    reconcile(controller, cluster)
    assert cost_workers(cluster) == before
    assert set(controller.cluster_workers[KEY]) == {name, "forged"}, "an unowned or oversized cluster is not kept"
    assert controller.cluster_workers[KEY]["forged"] == {"inf2.xlarge": 40, "m6i.xlarge": before["m6i.xlarge"]}


def test_a_cluster_not_seen_yet_keeps_the_cost_counted_last_and_a_new_deployment_starts_at_its_minima(cluster):
    controller = operator(cluster, deployment(stages={"fused": {"minReplicas": 0, "maxReplicas": 4}}))
    reconcile(controller, cluster)
    name = running_cluster(cluster)
    new = Controller(cluster.kube(), ManifestReader(cache_seconds=0))  # a restart: no RayCluster listed yet
    for body in cluster.listed("berninideployments"):
        new.observe_deployment("MODIFIED", body)
    for body in cluster.listed("rayservices"):
        new.observe_rayservice("MODIFIED", body)
    new.reconcile(KEY)
    status = cluster.get("berninideployments", NAMESPACE, NAME)["status"]
    minima = {group["instanceType"]: group["minReplicas"] for group in status["capacity"]["workerGroups"]}
    assert cost_workers(cluster) == minima, "before KubeRay's cluster was seen, KubeRay makes each group's minimum"
    reconcile(controller, cluster)
    counted = cost_workers(cluster)
    assert counted != minima
    written = len(cluster.writes)
    new.reconcile(KEY)
    assert cost_workers(cluster) == counted and cluster.writes[written:] == [], "no flap to the minima on a restart"


# -- an incremental upgrade's accelerator pods ------------------------------------------------------

INCREMENTAL = {"stages": {"fused": {"accelerators": 2, "minReplicas": 2, "maxReplicas": 6}},
               "upgradeStrategy": {"type": "Incremental", "incremental": {"gatewayClassName": "traefik"}}}


def kuberay_reports(cluster: FakeCluster, active: str, pending: str = "") -> None:
    sides = {"activeServiceStatus": {"rayClusterName": active}, "pendingServiceStatus": {"rayClusterName": pending}}
    cluster.edit("rayservices", NAMESPACE, NAME, {"status": {
        **sides, "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}}, manager="kuberay")


def inf2_bounds(cluster: FakeCluster, name: str) -> tuple[int, int]:
    group = next(g for g in cluster.get("rayclusters", NAMESPACE, name)["spec"]["workerGroupSpecs"]
                 if g["groupName"] == "inf2-xlarge")
    return group["minReplicas"], group["maxReplicas"]


def test_an_incremental_upgrades_new_cluster_asks_only_the_surge_over_what_the_old_one_had(cluster, store):
    store.publish(make_manifest("1.1.0"), URI + "next/")
    controller = operator(cluster, deployment(**INCREMENTAL))
    reconcile(controller, cluster)
    kuberay_cluster(cluster, "first", 2)
    kuberay_reports(cluster, "", pending="first")
    reconcile(controller, cluster)
    assert inf2_bounds(cluster, "first") == (0, 6), "the first cluster replaces nothing: all of its bounds"
    kuberay_reports(cluster, "first")
    cluster.edit("rayclusters", NAMESPACE, "first", {"spec": {"workerGroupSpecs": [
        {**group, "replicas": 4} if group["groupName"] == "inf2-xlarge" else group
        for group in cluster.get("rayclusters", NAMESPACE, "first")["spec"]["workerGroupSpecs"]]}})
    reconcile(controller, cluster)  # grown to four pods under load: a step is one pod's worth of four
    options = rayservice(cluster)["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]
    assert options["maxSurgePercent"] == 25 and options["intervalSeconds"] == 300 + 300 + 60

    edit_spec(cluster, model={"version": "1.1.0", "artifactsUri": URI + "next/"})
    reconcile(controller, cluster)
    kuberay_cluster(cluster, "next", 0)  # made with the RayService's bounds: the surge, one pod
    assert inf2_bounds(cluster, "next") == (0, 1)
    kuberay_reports(cluster, "first", pending="next")
    reconcile(controller, cluster)
    status = cluster.get("berninideployments", NAMESPACE, NAME)["status"]["rayService"]
    assert status["upgradeBaselinePods"] == 4 and inf2_bounds(cluster, "next") == (0, 1)
    # The old cluster gives two pods back: the new one may ask two more, and the baseline stays.
    cluster.edit("rayclusters", NAMESPACE, "first", {"spec": {"workerGroupSpecs": [
        {**group, "replicas": 2} if group["groupName"] == "inf2-xlarge" else group
        for group in cluster.get("rayclusters", NAMESPACE, "first")["spec"]["workerGroupSpecs"]]}})
    reconcile(controller, cluster)
    assert inf2_bounds(cluster, "next") == (0, 3)
    assert cluster.get("berninideployments", NAMESPACE, NAME)["status"]["rayService"]["upgradeBaselinePods"] == 4
    assert rayservice(cluster)["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["maxSurgePercent"] == 25
    # Switched: the new cluster serves with all of its bounds, and the baseline is gone from status.
    kuberay_reports(cluster, "next")
    reconcile(controller, cluster)
    assert inf2_bounds(cluster, "next") == (0, 6)
    assert "upgradeBaselinePods" not in cluster.get("berninideployments", NAMESPACE, NAME)["status"]["rayService"]


def test_the_endpoint_of_an_incremental_deployment_is_its_gateways_address_and_only_a_plain_one(cluster):
    controller = operator(cluster, deployment(**INCREMENTAL))
    reconcile(controller, cluster)
    kuberay_cluster(cluster, "first", 2)
    kuberay_reports(cluster, "first")
    # A tenant's Gateway of that name first: KubeRay would adopt it, but its address is not ours to show.
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "bernini-gateway", "namespace": NAMESPACE},
               "status": {"addresses": [{"value": "10.0.0.66"}]}}
    cluster.create(gateway, manager="tenant")
    reconcile(controller, cluster)
    endpoint = lambda: cluster.get("berninideployments", NAMESPACE, NAME)["status"].get("serveEndpoint")
    assert endpoint() == "", "no <name>-serve-svc in this mode, and a Gateway KubeRay did not make is not read"
    owner = rayservice(cluster)["metadata"]["uid"]
    cluster.edit("gateways", NAMESPACE, "bernini-gateway", {"metadata": {"ownerReferences": [
        {"apiVersion": "ray.io/v1", "kind": "RayService", "name": NAME, "uid": owner, "controller": True}]}},
        manager="kuberay")
    for address, shown in (("10.96.0.80", "http://10.96.0.80"), ("fd00::80", "http://[fd00::80]"),
                           ("gw.example.com", "http://gw.example.com"), ("evil.com/\x1b[2J", ""),
                           ("1.2.3.4:80", ""), ("-bad-.example", "")):
        cluster.edit("gateways", NAMESPACE, "bernini-gateway", {"status": {"addresses": [{"value": address}]}},
                     manager="traefik")
        reconcile(controller, cluster)
        assert endpoint() == shown, address


# -- an upgrade given back at its deadline -------------------------------------------------------------

NEXT = {"model": {"version": "1.1.0", "artifactsUri": URI + "next/"}}
LATER = "2099-01-01T00:00:00Z"  # far past any deadline


def settled(cluster: FakeCluster, active: str, pending: str = "", **pending_side) -> None:
    """KubeRay's side: it acted on the RayService's current generation; active serves, pending is starting."""
    generation = rayservice(cluster)["metadata"]["generation"]
    cluster.edit("rayservices", NAMESPACE, NAME, {"status": {
        "observedGeneration": generation, "activeServiceStatus": {"rayClusterName": active},
        "pendingServiceStatus": {"rayClusterName": pending, **pending_side} if pending else None,
        "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]}}, manager="kuberay")


def status_of(cluster: FakeCluster) -> dict:
    return cluster.get("berninideployments", NAMESPACE, NAME)["status"]


def upgrade_started(cluster: FakeCluster, store, body: dict, **pending_side) -> tuple[Controller, dict]:
    """A deployment serving 1.0.0 on cluster "first", changed to 1.1.0, whose cluster "next" KubeRay is starting
    (its worker failing its artifact pull); returns the controller and the RayService spec that serves."""
    store.publish(make_manifest("1.1.0"), URI + "next/")
    controller = operator(cluster, body)
    reconcile(controller, cluster)
    kuberay_cluster(cluster, "first", 1)
    settled(cluster, "first")
    reconcile(controller, cluster)
    serving_spec = copy.deepcopy(rayservice(cluster)["spec"])
    assert rollback.decode(status_of(cluster)["servingRayServiceSpec"]) == serving_spec
    edit_spec(cluster, **NEXT)
    reconcile(controller, cluster)
    settled(cluster, "first", "next", **pending_side)
    kuberay_cluster(cluster, "next", 1)
    failing = pod("next", "next-worker-0", "Running")
    failing["status"]["initContainerStatuses"] = [{"name": "pull-artifacts", "restartCount": 2, "state": {
        "terminated": {"exitCode": 1, "reason": "Error", "message": "sha256 mismatch for diffusion.pt"}}}]
    cluster.create(failing, manager="kubelet")
    reconcile(controller, cluster)
    assert status_of(cluster)["rayService"]["pendingSince"]
    return controller, serving_spec


def test_a_new_cluster_not_serving_by_its_deadline_is_given_back_and_kuberay_makes_no_other(cluster, store, monkeypatch):
    controller, serving_spec = upgrade_started(cluster, store, deployment())
    reconcile(controller, cluster)
    assert "abandonedUpgrade" not in status_of(cluster), "given back before its deadline"
    monkeypatch.setattr("bernini.reconcile.controller.now", lambda: LATER)
    reconcile(controller, cluster)
    given_back = status_of(cluster)["abandonedUpgrade"]
    assert given_back["modelVersion"] == "1.1.0" and "sha256 mismatch for diffusion.pt" in given_back["message"]
    # KubeRay is asked to prepare nothing new while its pending cluster is cleared from its status.
    assert rayservice(cluster)["spec"] == {**serving_spec, "upgradeStrategy": {"type": "None"}}
    assert "pendingServiceStatus" not in rayservice(cluster)["status"]
    ready = condition(cluster, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "UpgradeAbandoned") and "1.1.0" in ready["message"]
    assert warned(cluster, "UpgradeAbandoned")
    settled(cluster, "first")  # KubeRay read it: the goal is the active cluster, "next" is deleted
    reconcile(controller, cluster)
    assert rayservice(cluster)["spec"] == serving_spec, "the recorded strategy comes back once nothing is pending"
    written = len(cluster.writes)
    settled(cluster, "first")
    reconcile(controller, cluster)
    assert cluster.writes[written:] == [], "a given-back upgrade at rest writes nothing"
    assert rollback.decode(status_of(cluster)["servingRayServiceSpec"]) == serving_spec
    store.publish(make_manifest("1.2.0"), URI + "later/")
    edit_spec(cluster, model={"version": "1.2.0", "artifactsUri": URI + "later/"})
    reconcile(controller, cluster)
    assert "abandonedUpgrade" not in status_of(cluster) and condition(cluster, "Ready")["reason"] != "UpgradeAbandoned"
    assert rayservice(cluster)["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert "1.2.0" in json.dumps(rayservice(cluster)["spec"]), "the next spec change is a new upgrade"


def test_an_incremental_upgrade_past_its_deadline_goes_back_through_kuberays_own_rollback(cluster, store, monkeypatch):
    controller, serving_spec = upgrade_started(cluster, store, deployment(**INCREMENTAL))
    monkeypatch.setattr("bernini.reconcile.controller.now", lambda: LATER)
    reconcile(controller, cluster)
    assert status_of(cluster)["abandonedUpgrade"]["modelVersion"] == "1.1.0"
    assert rayservice(cluster)["spec"] == serving_spec, "the recorded spec as it is: KubeRay rolls back itself"
    assert rayservice(cluster)["status"]["pendingServiceStatus"]["rayClusterName"] == "next", "not cleared by hand"
    assert ("patch", "rayservices/status", NAME) not in cluster.writes


def test_a_new_cluster_taking_traffic_or_within_its_deadline_or_with_nothing_on_record_is_not_given_back(
        cluster, store, monkeypatch):
    controller, _ = upgrade_started(cluster, store, deployment(**INCREMENTAL), trafficRoutedPercent=20)
    monkeypatch.setattr("bernini.reconcile.controller.now", lambda: LATER)
    reconcile(controller, cluster)
    assert "abandonedUpgrade" not in status_of(cluster), "a cluster that serves a share is progressing"
    settled(cluster, "first", "next", trafficRoutedPercent=None)  # it lost its share again
    for forged in ("bm90IGEgc3BlYw==", rollback.encode({**rayservice(cluster)["spec"], "rayClusterConfig": {
            **rayservice(cluster)["spec"]["rayClusterConfig"], "rayVersion": "9.9.9"}})):
        cluster.edit("berninideployments", NAMESPACE, NAME, {"status": {"servingRayServiceSpec": forged}})
        reconcile(controller, cluster)
        assert "abandonedUpgrade" not in status_of(cluster), "no record that matches what serves"
    assert rayservice(cluster)["spec"]["serveConfigV2"].count("1.1.0")
    assert warned(cluster, "UpgradeNotGivenBack"), "said once per generation"


def test_a_pending_cluster_kuberay_replaced_just_before_the_clear_is_not_cleared(cluster, store, monkeypatch):
    controller, _ = upgrade_started(cluster, store, deployment())
    monkeypatch.setattr("bernini.reconcile.controller.now", lambda: LATER)
    clear = controller.kube.clear_pending_cluster

    def kuberay_first(*args):  # between our apply of the interim spec and the clear
        settled(cluster, "first", "another")
        clear(*args)

    monkeypatch.setattr(controller.kube, "clear_pending_cluster", kuberay_first)
    assert reconcile(controller, cluster) is None
    assert rayservice(cluster)["status"]["pendingServiceStatus"]["rayClusterName"] == "another"
    assert status_of(cluster)["abandonedUpgrade"]["modelVersion"] == "1.1.0"
