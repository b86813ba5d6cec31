"""One BerniniDeployment's life on real pods, every step inside real containers: apply to a mesh, autoscaling,
an upgrade under load, suspend and resume. The tests run in file order on one deployment (a module fixture),
as a user's history would; each fresh deployment would cost minutes on these two cores."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bernini.api import GROUP, PLURAL, VERSION
from bernini.render import names
from bernini.report import pull_summary
from tests.realnodes import helpers
from tests.realnodes.conftest import VERSIONS, artifacts_uri, publish_with_a_corrupt_stage, small_spec
from localdev.waiting import wait_for
from tests.realnodes.helpers import ACCELERATED_GROUP, ACCELERATED_WORKERS, CPU_GROUP, CPU_WORKERS

pytestmark = pytest.mark.realnodes


@dataclass(frozen=True)
class Served:
    namespace: str
    ready_seconds: float  # apply -> Ready=True
    mesh_seconds: float  # apply -> the first mesh through the Serve Service
    answer: tuple[int, dict, bytes]


@pytest.fixture(scope="module")
def node_cache_directory(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("node-cache")


@pytest.fixture(scope="module")
def node_cache(real_cluster, serving_namespace, node_cache_directory) -> str:
    """examples/artifacts-cache.yaml on the local nodes (the inf2 nodes share one directory here)."""
    claim, volume = helpers.apply_node_cache(real_cluster, serving_namespace, node_cache_directory)
    yield claim
    real_cluster.kubectl("delete", "persistentvolume", volume, "--wait=false")


def _pulled_from(pod) -> dict:
    """The worker's pull summary, as its init container's termination message put it into the pod's status."""
    puller = next(s for s in pod.status.init_container_statuses if s.name == "pull-artifacts")
    summary = pull_summary(puller.state.terminated.message)
    assert summary, f"no pull summary in the pod status of {pod.metadata.name}: {puller.state.terminated.message!r}"
    return summary


def _bernini_status(real_cluster, namespace: str) -> str:
    result = subprocess.run([sys.executable, "-m", "bernini", "status", "bernini", "-n", namespace], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "KUBECONFIG": str(real_cluster.kubeconfig)})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def served(real_cluster, real_operator, real_core, real_custom, serving_namespace, node_cache, node_s3,
           published_versions) -> Served:
    """The local spec, with the node artifact cache, applied once: Ready=True and a first mesh through the Serve
    Service (kube-proxy may need a sync period to program the endpoints KubeRay counted)."""
    namespace = serving_namespace
    started = time.monotonic()
    body = small_spec(real_cluster, node_s3)
    body["spec"]["artifactsCache"] = {"claimName": node_cache, "sizeLimit": "2Gi"}
    real_custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(lambda: helpers.ready(real_custom, namespace), "Ready=True on the BerniniDeployment", timeout=600,
             interval=2)
    ready_seconds = time.monotonic() - started
    answer = wait_for(lambda: helpers.answer(real_core, namespace), "a mesh from bernini-serve-svc", timeout=180,
                      interval=2)
    return Served(namespace, ready_seconds, time.monotonic() - started, answer)


def test_apply_to_mesh_on_real_pods(served, real_cluster, real_core, real_custom):
    namespace = served.namespace
    print(f"\napply -> Ready: {served.ready_seconds:.1f}s; apply -> first mesh: {served.mesh_seconds:.1f}s")
    body = helpers.deployment(real_custom, namespace)
    assert body["status"]["modelVersion"] == VERSIONS[0]

    # Head on a CPU node, the accelerated worker on an inf2 node with all its NeuronCores, the CPU group's worker
    # (ingress and triangulation) on a CPU node with no artifacts, accelerator or store access.
    head = helpers.pods(real_core, namespace, "ray.io/node-type=head")[0]
    assert head.spec.node_name.startswith("real-cpu-")
    assert head.spec.automount_service_account_token is True  # the autoscaler sidecar's token
    workers = helpers.pods(real_core, namespace, "ray.io/node-type=worker")
    accelerated = helpers.pods(real_core, namespace, ACCELERATED_WORKERS)
    cpu_workers = helpers.pods(real_core, namespace, CPU_WORKERS)
    assert len(workers) == 2 and len(accelerated) == len(cpu_workers) == 1, [p.metadata.name for p in workers]
    worker, cpu_worker = accelerated[0], cpu_workers[0]
    assert worker.spec.node_name.startswith("real-inf2-") and cpu_worker.spec.node_name.startswith("real-cpu-")
    assert worker.spec.containers[0].resources.limits["aws.amazon.com/neuroncore"] == "2"
    assert "pull-artifacts" not in {c.name for c in cpu_worker.spec.init_containers or []}  # KubeRay adds its own
    assert not [t for t in cpu_worker.spec.tolerations or [] if t.effect == "NoSchedule"]
    assert set(cpu_worker.spec.containers[0].resources.limits) == {"cpu", "memory"}

    # The init container pulled from the S3 server and verified every file before Ray started.
    puller = next(s for s in worker.status.init_container_statuses if s.name == "pull-artifacts")
    assert puller.state.terminated.exit_code == 0
    log = helpers.container_log(real_core, namespace, worker.metadata.name, "pull-artifacts")
    last = log.splitlines()[-1]
    assert "checksums verified" in log and "0 from the node cache (0.0 MiB); first request" in last, log
    assert last.endswith("(credentials: environment)"), log  # the harness hands the pods the store's keys
    total = body["status"]["artifacts"]["totalBytes"]
    pulled = _pulled_from(worker)  # a cold node cache: every byte from the store
    assert (pulled["storeBytes"], pulled["cacheBytes"]) == (total, 0), pulled
    # KubeRay's readiness probe on a RayService worker also asks its Serve proxy, and one failed answer (threshold 1)
    # makes the pod not ready for a period: a loaded two-core node misses one now and then.
    line = re.compile(rf"{worker.metadata.name}\s+Running\s+ready\s+artifacts: {total / 2**20:.1f} MiB from the store, "
                      r"0\.0 MiB from the node cache")
    wait_for(lambda: line.search(_bernini_status(real_cluster, namespace)), "the worker ready with its pull in bernini status",
             timeout=90, interval=3, explain=lambda: _bernini_status(real_cluster, namespace))

    # Ray workers joined with token auth and the neuron_cores resource.
    raycluster = body["status"]["rayService"]["activeCluster"]
    token = helpers.ray_token(real_core, namespace, raycluster)
    status, _ = helpers.dashboard(real_core, namespace, raycluster, "/api/version", token=None)
    assert status in (401, 403), f"the dashboard answered {status} without the Ray token"
    status, payload = helpers.dashboard(real_core, namespace, raycluster, "/api/v0/nodes?detail=true", token=token)
    assert status == 200, payload[:300]
    nodes = helpers.find_key(json.loads(payload), "resources_total")
    assert any(resources.get("neuron_cores") == 2 for resources in nodes), nodes
    assert any(resources.get("bernini_cpu_worker") for resources in nodes), nodes
    # Each Serve replica on its own group's worker.
    deployments = helpers.serve_applications(real_core, namespace, raycluster)["applications"]["bernini"]["deployments"]
    placed = {name: {replica["node_ip"] for replica in deployment["replicas"]} for name, deployment in deployments.items()}
    assert placed == {"FusedStages": {worker.status.pod_ip}, "Triangulation": {cpu_worker.status.pod_ip},
                      "BerniniIngress": {cpu_worker.status.pod_ip}}, placed

    # Status reads KubeRay's report back: every Serve deployment of the pipeline, and the workers' cost.
    body = wait_for(lambda: (b := helpers.deployment(real_custom, namespace))["status"].get("stages") and
                    {s["status"] for s in b["status"]["stages"]} == {"HEALTHY"} and b, "every stage HEALTHY in status")
    assert [s["name"] for s in body["status"]["stages"]] == ["FusedStages", "Triangulation", "BerniniIngress"]
    cost = body["status"]["cost"]
    assert cost["workers"] == len(workers) and cost["currentDollarsPerHour"] == cost["minDollarsPerHour"] > 0

    status, headers, mesh = served.answer
    assert status == 200, mesh[:500]
    info = json.loads(headers["x-bernini-mesh"])
    assert info["faces"] > 100 and mesh[:4] == b"glTF"
    print(f"first mesh: {info['vertices']} vertices")


def _live_look_back(real_core, namespace: str, raycluster: str) -> float | None:
    """FusedStages' look-back window as Serve's controller on the cluster's head runs it."""
    applications = helpers.serve_applications(real_core, namespace, raycluster) or {"applications": {}}
    deployment = applications["applications"].get("bernini", {}).get("deployments", {}).get("FusedStages", {})
    return deployment.get("deployment_config", {}).get("autoscaling_config", {}).get("look_back_period_s")


def _set_look_back(real_custom, real_core, namespace: str, raycluster: str, seconds: float) -> None:
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini",
                                               {"spec": {"autoscaling": {"lookBackPeriodSeconds": seconds}}})
    wait_for(lambda: _live_look_back(real_core, namespace, raycluster) == seconds,
             f"Serve on {raycluster} to run a {seconds:g} s window", timeout=180, interval=2)


def test_every_class_is_drawn_as_asked_through_the_serve_service(served, real_core):
    """The trained model behind real pods: each class from a prompt, a sketch and a scan, judged on the mesh Serve
    returns (its occupancy read back), against the threshold the in-process test uses."""
    from bernini.model import dataset, quality

    templates = quality.templates()
    endpoint = f"http://{helpers.cluster_ip(real_core, served.namespace, 'bernini-serve-svc')}:8000"
    rows = []
    for label in dataset.CLASSES:
        for kind, content_type, body in quality.request_bodies(label):
            status, headers, mesh = helpers.post(endpoint, 120, "glb", body, content_type)
            assert status == 200, (label, kind, status, mesh[:300])
            assert headers["x-bernini-model-version"] == VERSIONS[0]
            rows.append(quality.judge_mesh(label, kind, mesh, "glb", templates))
    print("\n" + quality.table(rows))
    assert not [row for row in rows if row.problem], quality.table(rows)


def test_a_serve_only_change_reaches_the_running_cluster_in_place(served, real_core, real_custom):
    """What an operator upgrade that renders a new Serve key does too: serveConfigV2 changes, the pods stay."""
    namespace = served.namespace
    body = helpers.deployment(real_custom, namespace)
    raycluster = body["status"]["rayService"]["activeCluster"]
    before = {p.metadata.uid for p in helpers.pods(real_core, namespace, f"ray.io/cluster={raycluster}")}
    rendered = yaml.safe_load(helpers.rayservice(real_custom, namespace)["spec"]["serveConfigV2"])
    fused = next(d for d in rendered["applications"][0]["deployments"] if d["name"] == "FusedStages")
    window = _live_look_back(real_core, namespace, raycluster)
    assert window == fused["autoscaling_config"]["look_back_period_s"]

    _set_look_back(real_custom, real_core, namespace, raycluster, window + 8)
    body = helpers.deployment(real_custom, namespace)
    assert body["status"]["rayService"]["activeCluster"] == raycluster
    assert not body["status"]["rayService"].get("pendingCluster"), body["status"]["rayService"]
    assert {p.metadata.uid for p in helpers.pods(real_core, namespace, f"ray.io/cluster={raycluster}")} == before
    assert helpers.condition(body, "Ready")["status"] == "True"
    status, _, _ = wait_for(lambda: helpers.answer(real_core, namespace), "a mesh after the change", timeout=60)
    assert status == 200

    _set_look_back(real_custom, real_core, namespace, raycluster, window)  # what the next tests expect
    assert helpers.deployment(real_custom, namespace)["status"]["rayService"]["activeCluster"] == raycluster


def _group_bounds(real_custom, namespace: str, raycluster: str) -> list[tuple[int, int]]:
    live = real_custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters", raycluster)
    return [(group.get("minReplicas"), group.get("maxReplicas")) for group in live["spec"]["workerGroupSpecs"]]


def test_a_change_of_replica_bounds_reaches_the_running_cluster_in_place(served, real_core, real_custom):
    """KubeRay never carries a worker group's min/max from the RayService into a running RayCluster (kuberay#4568):
    the operator sets them there, on the same cluster and pods. FusedStages at most 1 (from 2) needs one inf2
    worker node at most (from 2); the CPU group's bounds stay."""
    namespace = served.namespace
    raycluster = helpers.deployment(real_custom, namespace)["status"]["rayService"]["activeCluster"]
    before = {p.metadata.uid for p in helpers.pods(real_core, namespace, f"ray.io/cluster={raycluster}")}
    assert _group_bounds(real_custom, namespace, raycluster) == [(1, 2), (1, 1)]
    for maximum, nodes in ((1, [(1, 1), (1, 1)]), (2, [(1, 2), (1, 1)])):  # and back: what the next tests expect
        real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini",
                                                   {"spec": {"stages": {"fused": {"maxReplicas": maximum}}}})
        wait_for(lambda: _group_bounds(real_custom, namespace, raycluster) == nodes,
                 f"the running RayCluster's bounds to be {nodes}", timeout=120, interval=1,
                 explain=lambda: str(_group_bounds(real_custom, namespace, raycluster)))
        status = helpers.deployment(real_custom, namespace)["status"]
        assert status["rayService"]["activeCluster"] == raycluster and not status["rayService"].get("pendingCluster")
        assert status["capacity"]["maxWorkers"] == sum(high for _, high in nodes)
    assert {p.metadata.uid for p in helpers.pods(real_core, namespace, f"ray.io/cluster={raycluster}")} == before


def _pulled(pod) -> bool:
    return any(s.name == "pull-artifacts" and s.state.terminated and s.state.terminated.exit_code == 0
               for s in pod.status.init_container_statuses or [])


def _worker_replicas(real_custom, namespace) -> int:
    """The accelerated group's workers, as the Ray autoscaler sets them."""
    clusters = real_custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")["items"]
    return sum(group.get("replicas", 0) for group in clusters[0]["spec"]["workerGroupSpecs"]
               if group["groupName"] == ACCELERATED_GROUP)


def test_concurrency_scales_serve_up_then_the_ray_autoscaler_asks_for_a_worker_and_gives_it_back(
        served, real_core, real_custom):
    namespace = served.namespace
    # Steady state first: one inf2 worker holds the fused replica (its 2 NeuronCores).
    wait_for(lambda: _worker_replicas(real_custom, namespace) == 1, "one worker at rest", timeout=300, interval=2)

    resting = {p.metadata.name for p in helpers.pods(real_core, namespace, ACCELERATED_WORKERS)}
    clients = [helpers.Load(lambda: helpers.generate(real_core, namespace, timeout=120, file_format="obj"))
               for _ in range(4)]
    started = time.monotonic()
    for client in clients:
        client.start()
    try:
        # FusedStages targets 1 ongoing request per replica; its second replica needs NeuronCores no worker has.
        wait_for(lambda: _worker_replicas(real_custom, namespace) >= 2,
                 "the Ray autoscaler to raise the worker group's replicas", timeout=300, interval=1)
        scale_up = time.monotonic() - started
        # The cost in status follows the autoscaler's worker count (KubeRay's report on the RayService).
        wait_for(lambda: helpers.deployment(real_custom, namespace)["status"]["cost"]["workers"] >= 3,
                 "status.cost to count the second inf2 worker", timeout=120, interval=1)
        # The added worker copied the whole set from the node cache: nothing downloaded.
        added = wait_for(lambda: [p for p in helpers.pods(real_core, namespace, ACCELERATED_WORKERS)
                                  if p.metadata.name not in resting and _pulled(p)],
                         "the added worker's pull to finish", timeout=180, interval=2)
        pulled = _pulled_from(added[0])
        total = helpers.deployment(real_custom, namespace)["status"]["artifacts"]["totalBytes"]
        assert (pulled["storeBytes"], pulled["cacheBytes"]) == (0, total) and pulled["cacheFiles"] > 0, pulled
    finally:
        results = [result for client in clients for result in client.stop()]
    failures = [failure for client in clients for failure in client.failures]
    print(f"\nscale-up: load start -> worker replicas raised in {scale_up:.1f}s; {len(results)} requests, "
          f"{len(failures)} failed")
    assert results and not failures, failures
    # Idle again: Serve scales FusedStages down, and after idleTimeoutSeconds the autoscaler returns the worker
    # (which the upgrade below needs: its new cluster's worker takes the other inf2 node).
    wait_for(lambda: _worker_replicas(real_custom, namespace) == 1, "the worker group back to one replica",
             timeout=300, interval=2)


def _where_things_stand(real_core, real_custom, namespace) -> str:
    """The pods (phase, node, unready conditions) and KubeRay's view of the pending cluster's applications."""
    lines = []
    for pod in helpers.pods(real_core, namespace, "app.kubernetes.io/name=bernini"):
        unready = [f"{c.type}={c.status} {c.reason or ''} {(c.message or '')[:160]}"
                   for c in pod.status.conditions or [] if c.status != "True"]
        lines.append(f"{pod.metadata.name} {pod.status.phase} on {pod.spec.node_name}: {'; '.join(unready)}")
    pending = helpers.rayservice(real_custom, namespace).get("status", {}).get("pendingServiceStatus", {})
    lines.append(json.dumps(pending.get("applicationStatuses", {}))[:2000])
    return "\n".join(lines)


def _prewarm_pods(real_core, namespace) -> list:
    return helpers.pods(real_core, namespace, "app.kubernetes.io/component=prewarm")


def test_a_new_version_rolls_out_on_a_new_cluster_with_no_failed_request(served, real_core, real_custom, real_cluster):
    namespace = served.namespace
    body = helpers.deployment(real_custom, namespace)
    assert body["status"]["modelVersion"] == VERSIONS[0]
    old_cluster = body["status"]["rayService"]["activeCluster"]
    client = helpers.Load(lambda: helpers.generate(real_core, namespace, timeout=120, file_format="obj"))
    client.start()

    # The node caches are pre-warmed with the new version while it rolls out.
    patch = {"spec": {"model": {"version": VERSIONS[1], "artifactsUri": artifacts_uri(VERSIONS[1])},
                      "artifactsCache": {"prewarm": True}}}
    started = time.monotonic()
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", patch)

    def pending_cluster():
        status = helpers.rayservice(real_custom, namespace).get("status", {})
        return status.get("pendingServiceStatus", {}).get("rayClusterName")

    pending = wait_for(pending_cluster, "KubeRay to bring up a pending RayCluster", timeout=120, interval=1)
    assert pending != old_cluster
    # While the new cluster is only pending, the old version serves and status says so.
    assert helpers.deployment(real_custom, namespace)["status"]["modelVersion"] == VERSIONS[0]
    # One pre-warm pod per inf2 node, the old cluster's worker node included, each holding the new set.
    inf2_nodes = sorted(node.name for node in real_cluster.node_layer.fleet if node.name.startswith("real-inf2"))
    prewarmed = wait_for(lambda: (pods := _prewarm_pods(real_core, namespace)) and len(pods) == len(inf2_nodes) and
                         all(_pulled(p) for p in pods) and pods, "a pre-warm pod per inf2 node to pull", timeout=300)
    assert sorted(p.spec.node_name for p in prewarmed) == inf2_nodes
    assert all(p.metadata.labels["app.kubernetes.io/version"] == VERSIONS[1] for p in prewarmed)

    def switched():
        status = helpers.rayservice(real_custom, namespace).get("status", {})
        return status.get("activeServiceStatus", {}).get("rayClusterName") == pending

    wait_for(switched, "KubeRay to switch traffic to the new cluster", timeout=600, interval=1,
             explain=lambda: _where_things_stand(real_core, real_custom, namespace))
    switch_seconds = time.monotonic() - started
    body = wait_for(lambda: (b := helpers.ready(real_custom, namespace)) and b["status"]["modelVersion"] == VERSIONS[1] and b,
                    "status.modelVersion to name the new version", timeout=120, interval=1)
    assert body["status"]["rayService"]["activeCluster"] == pending

    def old_cluster_gone():
        names = [c["metadata"]["name"] for c in real_custom.list_namespaced_custom_object(
            "ray.io", "v1", namespace, "rayclusters")["items"]]
        return old_cluster not in names

    wait_for(old_cluster_gone, "KubeRay to delete the old RayCluster", timeout=300, interval=2)
    # The caches are shared by every pod of a node (here one directory for both inf2 nodes): the new worker
    # and both pre-warm pods pulled the whole set, and no byte of it came from the store twice.
    total = helpers.deployment(real_custom, namespace)["status"]["artifacts"]["totalBytes"]
    new_worker = min(helpers.pods(real_core, namespace, f"ray.io/cluster={pending},{ACCELERATED_WORKERS}"),
                     key=lambda p: p.metadata.creation_timestamp)  # the first; load may have added one
    pulls = [_pulled_from(p) for p in [new_worker, *prewarmed]]
    assert all(pull["storeBytes"] + pull["cacheBytes"] == total for pull in pulls), pulls
    assert sum(pull["storeBytes"] for pull in pulls) <= total, pulls
    print(f"\npre-warm: MiB from the store / node cache: new worker, then each pre-warm pod: " + ", ".join(
        f"{pull['storeBytes'] / 2**20:.1f} / {pull['cacheBytes'] / 2**20:.1f}" for pull in pulls))
    # The new version serves: the DaemonSet and its pods are gone.
    wait_for(lambda: not _prewarm_pods(real_core, namespace) and "bernini-prewarm" not in real_cluster.kubectl(
        "get", "daemonsets", "-n", namespace, "-o", "name"), "the pre-warm DaemonSet to go", timeout=120)
    status, headers, _ = helpers.generate(real_core, namespace)
    assert (status, headers.get("x-bernini-model-version")) == (200, VERSIONS[1])
    time.sleep(5)  # a few requests on the new cluster alone
    results = client.stop()
    during = [status for at, status, _ in results if at >= started]
    print(f"\nupgrade: switch after {switch_seconds:.1f}s; {len(during)} requests during the switch, "
          f"{sum(s != 200 for s in during)} failed")
    assert during and not client.failures, client.failures


def test_a_version_whose_artifacts_fail_verification_is_given_back_at_its_deadline_with_its_pods(
        served, real_cluster, real_core, real_custom, node_s3_client, tmp_path):
    """NewCluster: the pending cluster's workers fail their checksum; past the deadline the RayService goes back
    to the serving spec, KubeRay deletes the new cluster (and makes no other), and the old version serves on."""
    namespace, broken, deadline = served.namespace, "1.2.0-corrupt", 90
    publish_with_a_corrupt_stage(node_s3_client, broken, tmp_path / "compiled")
    before = helpers.deployment(real_custom, namespace)
    serving_cluster, serving_spec = before["status"]["rayService"]["activeCluster"], before["spec"]
    serving_version = before["status"]["modelVersion"]
    load = helpers.Load(lambda: helpers.generate(real_core, namespace, timeout=120, file_format="obj"))
    load.start()
    started = time.monotonic()
    helpers.patch_version_with_deadline(real_custom, namespace, broken, artifacts_uri(broken), deadline)
    clusters_seen = set()

    def given_back():
        clusters_seen.update(helpers.raycluster_names(real_custom, namespace))
        return helpers.deployment(real_custom, namespace)["status"].get("abandonedUpgrade")

    try:
        abandoned = wait_for(given_back, "the upgrade to be given back", timeout=deadline + 240, interval=1,
                             explain=lambda: _where_things_stand(real_core, real_custom, namespace))
        abandoned_seconds = time.monotonic() - started
        [new_cluster] = clusters_seen - {serving_cluster}
        wait_for(lambda: clusters_seen.update(helpers.raycluster_names(real_custom, namespace)) or
                 helpers.raycluster_names(real_custom, namespace) == [serving_cluster] and
                 not helpers.pods(real_core, namespace, f"ray.io/cluster={new_cluster}"),
                 "KubeRay to delete the new cluster and its pods", timeout=300, interval=2,
                 explain=lambda: _where_things_stand(real_core, real_custom, namespace))
        gone_seconds = time.monotonic() - started
        time.sleep(5)  # requests on the serving version after the new cluster is gone
    finally:
        results = load.stop()
    print(f"\ngiven back: {abandoned_seconds:.1f}s after the patch (deadline {deadline}s), its cluster and pods "
          f"gone at {gone_seconds:.1f}s; {len(results)} requests meanwhile, {len(load.failures)} failed")
    assert clusters_seen == {serving_cluster, new_cluster}, f"KubeRay made another cluster: {clusters_seen}"
    assert abandoned["modelVersion"] == broken and "InitContainerFailed" in abandoned["message"], abandoned
    assert abandoned_seconds >= deadline
    body = helpers.deployment(real_custom, namespace)
    assert body["status"]["modelVersion"] == serving_version
    ready = helpers.condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "UpgradeAbandoned") and broken in ready["message"]
    events = real_core.list_namespaced_event(namespace, field_selector="reason=UpgradeAbandoned").items
    assert [event.type for event in events] == ["Warning"], events
    rayservice = helpers.rayservice(real_custom, namespace)
    assert rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}, "the recorded strategy is back"
    assert "pendingServiceStatus" not in rayservice["status"] or not rayservice["status"][
        "pendingServiceStatus"].get("rayClusterName")
    report = _bernini_status(real_cluster, namespace)
    assert f"upgrade to {broken} given back at" in report and f"(serving {serving_version})" in report, report
    assert results and not load.failures, load.failures
    assert {version for _, _, version in results} == {serving_version}
    # Back to the serving version's spec: nothing to roll out, and Ready again.
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", {"spec": {
        "model": serving_spec["model"], "upgradeStrategy": serving_spec["upgradeStrategy"]}})
    wait_for(lambda: helpers.ready(real_custom, namespace), "Ready=True on the serving version", timeout=120)
    assert helpers.raycluster_names(real_custom, namespace) == [serving_cluster]


def test_suspend_deletes_every_ray_pod_and_resume_serves_again(served, real_core, real_custom):
    namespace = served.namespace
    assert helpers.pods(real_core, namespace, "ray.io/node-type=worker")

    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", {"spec": {"suspend": True}})
    wait_for(lambda: not helpers.pods(real_core, namespace, "ray.io/is-ray-node=yes"),
             "KubeRay to delete every Ray pod (head and workers)", timeout=300, interval=2)
    assert helpers.rayservice(real_custom, namespace), "suspend keeps the RayService"
    assert helpers.answer(real_core, namespace) is None, "nothing may answer on the Serve Service while suspended"
    body = helpers.deployment(real_custom, namespace)
    assert helpers.condition(body, "Ready")["reason"] == "Suspended"

    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", {"spec": {"suspend": False}})
    worker, = wait_for(lambda: [p for p in helpers.pods(real_core, namespace, "ray.io/node-type=worker") if _pulled(p)],
                       "a worker pod again, its artifacts pulled", timeout=300)
    pulled = _pulled_from(worker)  # the upgrade's worker left this version in the cache
    total = helpers.deployment(real_custom, namespace)["status"]["artifacts"]["totalBytes"]
    assert (pulled["storeBytes"], pulled["cacheBytes"]) == (0, total), pulled
    wait_for(lambda: (helpers.answer(real_core, namespace) or (0,))[0] == 200, "a mesh after resume",
             timeout=600, interval=3)


def _accelerated_group_bounds(real_custom, namespace) -> list[tuple[int, int]]:
    clusters = real_custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")["items"]
    return [(group.get("minReplicas"), group.get("replicas")) for cluster in clusters
            for group in cluster["spec"]["workerGroupSpecs"] if group["groupName"] == ACCELERATED_GROUP]


ACCELERATED_TYPE, CPU_TYPE = names.instance_type_of_group(ACCELERATED_GROUP), names.instance_type_of_group(CPU_GROUP)


def _cost_workers(real_custom, namespace) -> dict[str, int]:
    status = real_custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini")["status"]
    return {entry["instanceType"]: entry["workers"] for entry in status["cost"]["instanceTypes"]}


def test_an_idle_deployment_holds_no_accelerator_pod_and_its_next_request_brings_one_back(
        served, real_core, real_custom, node_cache_directory):
    """FusedStages at minReplicas 0: after the Serve downscale delay (10 s here) and the Ray autoscaler's idle
    timeout (30 s) no inf2 worker is left, while the ingress stays up on the CPU group and holds the next request
    until a replica is back, and status.cost counts no inf2 worker. Timed with the node cache warm, then emptied
    (cold)."""
    namespace = served.namespace
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini",
                                               {"spec": {"stages": {"fused": {"minReplicas": 0}}}})
    try:
        timings = {}
        for cache in ("warm", "cold"):
            wait_for(lambda: not helpers.pods(real_core, namespace, ACCELERATED_WORKERS),
                     "no inf2 worker pod while idle", timeout=300, interval=2)
            groups = _accelerated_group_bounds(real_custom, namespace)
            assert groups == [(0, 0)], groups  # (minReplicas, replicas) of the running cluster's inf2 group
            wait_for(lambda: _cost_workers(real_custom, namespace).get(ACCELERATED_TYPE) == 0,
                     "status.cost to count no inf2 worker while idle", timeout=30, interval=1)
            counted = _cost_workers(real_custom, namespace)
            assert counted[CPU_TYPE] >= 1, counted
            assert helpers.pods(real_core, namespace, CPU_WORKERS), "the CPU group went idle too"
            if cache == "cold":
                for entry in node_cache_directory.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            started = time.monotonic()
            status, headers, body = helpers.generate(real_core, namespace, timeout=600)
            timings[cache] = time.monotonic() - started
            assert status == 200 and body[:4] == b"glTF", (status, body[:300])
            [worker] = helpers.pods(real_core, namespace, ACCELERATED_WORKERS)
            pulled = _pulled_from(worker)
            assert (pulled["cacheBytes"] > 0) == (cache == "warm"), pulled
        print("\nrequest at zero -> its mesh: " + ", ".join(f"node cache {cache} {seconds:.1f}s"
                                                          for cache, seconds in timings.items()))
    finally:
        real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini",
                                                   {"spec": {"stages": {"fused": {"minReplicas": 1}}}})
