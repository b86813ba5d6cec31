"""`make bench-e2e`: what a user waits for on real pods (real-node cluster, 2-core machine).

Prints: cluster up with the image store cold and warm (the image import is the "cold image" cost: pods
never pull); apply -> Ready and apply -> first mesh for a first and a second deployment; the scale-up
request latency (load start -> the Ray autoscaler raises the worker group's replicas) and a scaled-up
worker's cold start (pod created -> artifacts pulled -> Ray container started -> a Serve replica RUNNING on
it) on a node without the artifact cache and with a warm one; and an upgrade under load with each strategy
(NewCluster, Incremental): patch -> all traffic on the new cluster, requests sent / failed (goal 0), and the
peak accelerator worker pods over those at rest; then, with each strategy, an upgrade to a broken version
(NewCluster: an artifact fails its checksum in the pod; Incremental: the Serve replicas raise as they start)
given back at its 60 s deadline: patch -> given back, patch -> the new cluster and its pods gone,
requests sent / failed, peak accelerator pods. `--upgrades-only` runs the upgrades on a warm cluster. One run each (each takes
minutes).
"""

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import yaml
from kubernetes import client, config

from bernini.api import GROUP, PLURAL, VERSION
from bernini.report import pull_summary
from localdev import LocalCluster, nodenet
from localdev.nodelayer import GATEWAY_CLASS, build_images
from localdev.s3server import LocalS3
from localdev.sizing import fit_to_local_nodes
from localdev.stack import namespace_manifests, publish_reference_model
from tests.operator_process import OperatorProcess
from tests.realnodes import helpers
from tests.realnodes.conftest import publish_with_a_corrupt_stage, publish_with_a_stage_that_does_not_load
from localdev.waiting import wait_for

EXAMPLE = Path(__file__).parents[2] / "examples" / "bernini-minimal.yaml"
VERSIONS = ("1.0.0", "1.1.0")
BROKEN = {"NewCluster": ("1.2.0-corrupt", publish_with_a_corrupt_stage),
          "Incremental": ("1.2.0-crash", publish_with_a_stage_that_does_not_load)}
DEADLINE_SECONDS = 60


def uri(version: str) -> str:
    return f"s3://artifacts/bench/{version}/"


def cluster_up(root: Path, cold: bool) -> tuple[LocalCluster, float]:
    if cold:
        images = build_images(root / "images.log")
        shutil.rmtree(Path(images["CACHE_DIR"]) / f"containerd-store-{images['BASE_KEY']}", ignore_errors=True)
    cluster = LocalCluster.in_directory(root / ("cold" if cold else "warm"), real_nodes=True, tied_to_parent=True)
    return cluster, cluster.up()


def prepared_namespace(cluster, core, s3, namespace: str) -> dict:
    """A namespace as a platform team prepares it; returns the minimal example fitted to the local nodes."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    wait_for(lambda: core.list_namespaced_service_account(namespace, field_selector="metadata.name=default").items,
             "default ServiceAccount")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": namespace_manifests(namespace, s3)}))
    return fit_to_local_nodes(yaml.safe_load(EXAMPLE.read_text()), cluster.node_layer.images["SERVING_IMAGE"],
                              s3.endpoint_url, VERSIONS[0], uri(VERSIONS[0]))


def deploy(cluster, core, custom, s3, namespace: str, cache_directory: Path | None = None,
           incremental: bool = False) -> tuple[float, float]:
    """Apply the fitted example (with incremental: two fused replicas at rest, the Incremental strategy through
    the harness's Traefik); seconds to Ready and to a first mesh."""
    body = prepared_namespace(cluster, core, s3, namespace)
    if cache_directory:
        claim, _ = helpers.apply_node_cache(cluster, namespace, cache_directory)
        body["spec"]["artifactsCache"] = {"claimName": claim, "sizeLimit": "2Gi"}
    if incremental:
        body["spec"]["stages"]["fused"].update(minReplicas=2, maxReplicas=2)
        body["spec"]["upgradeStrategy"] = {"type": "Incremental", "incremental": {"gatewayClassName": GATEWAY_CLASS}}
    started = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(lambda: helpers.ready(custom, namespace), "Ready", timeout=900, interval=1)
    ready = time.monotonic() - started
    send = sender(core, custom, namespace)
    wait_for(lambda: answered(send), "a mesh", timeout=300, interval=1)
    return ready, time.monotonic() - started


def sender(core, custom, namespace: str) -> Callable[[], tuple[int, dict, bytes]]:
    """A prompt to the deployment's endpoint: the Gateway's address from status, else the Serve Service."""
    endpoint = helpers.deployment(custom, namespace)["status"].get("serveEndpoint", "")
    if "-serve-svc." not in endpoint:
        return lambda: helpers.post(endpoint, 120, "obj")
    return lambda: helpers.generate(core, namespace, timeout=120, file_format="obj")


def answered(send) -> bool:
    try:
        return send()[0] == 200
    except OSError:
        return False


def upgrade(core, custom, namespace: str) -> dict[str, float]:
    """Patch the version under load: seconds to all traffic on the new cluster, requests sent and failed, and
    the accelerator worker pods at rest and at most during the upgrade (asked by the RayClusters, existing)."""
    old = helpers.deployment(custom, namespace)["status"]["rayService"]["activeCluster"]
    steady = len(helpers.pods(core, namespace, helpers.ACCELERATED_WORKERS))
    load, peak = helpers.Load(sender(core, custom, namespace)), helpers.PodPeak(core, custom, namespace)
    load.start()
    peak.start()
    started = time.monotonic()
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini",
                                          {"spec": {"model": {"version": VERSIONS[1], "artifactsUri": uri(VERSIONS[1])}}})

    def switched():
        active = helpers.rayservice(custom, namespace).get("status", {}).get("activeServiceStatus", {})
        return active.get("rayClusterName") not in (None, old)

    wait_for(switched, "the switch", timeout=1200, interval=0.5)
    seconds = time.monotonic() - started
    results = load.stop()
    asked, existing = peak.stop()
    return {"seconds": seconds, "sent": len(results), "failed": sum(status != 200 for _, status, _ in results),
            "steady": steady, "asked": asked, "existing": existing}


def upgrade_rows(label: str, figures: dict[str, float]) -> list[tuple[str, str]]:
    steady = figures["steady"]
    return [(f"upgrade, {label}: patch -> all traffic on the new cluster", f"{figures['seconds']:.1f} s"),
            (f"upgrade, {label}: requests sent / failed (goal 0)", f"{figures['sent']} / {figures['failed']}"),
            (f"upgrade, {label}: peak accelerator pods asked / existing, over {steady} at rest",
             f"{figures['asked']} / {figures['existing']} ({figures['asked'] / steady:.2f}x / "
             f"{figures['existing'] / steady:.2f}x)")]


def scale_up(core, custom, namespace: str) -> tuple[float, dict[str, float]]:
    """Seconds from load start to the autoscaler raising the worker group, and the added worker's start."""
    def replicas():
        clusters = custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")["items"]
        return sum(group.get("replicas", 0) for c in clusters for group in c["spec"]["workerGroupSpecs"]
                   if group["groupName"] == helpers.ACCELERATED_GROUP)

    # One worker at rest, and no other left terminating (an upgrade's old worker holds its node's NeuronCores
    # until it is gone, and a new pod there waits for them).
    wait_for(lambda: replicas() == 1 and len(helpers.pods(core, namespace, helpers.ACCELERATED_WORKERS)) == 1,
             "one inf2 worker at rest", timeout=600, interval=2)
    resting = {pod.metadata.name for pod in helpers.pods(core, namespace, helpers.ACCELERATED_WORKERS)}
    loads = [helpers.Load(sender(core, custom, namespace)) for _ in range(4)]
    started = time.monotonic()
    for load in loads:
        load.start()
    try:
        wait_for(lambda: replicas() >= 2, "the autoscaler to raise replicas", timeout=600, interval=0.5)
        raised = time.monotonic() - started
        added, = wait_for(lambda: [pod for pod in helpers.pods(core, namespace, helpers.ACCELERATED_WORKERS)
                                   if pod.metadata.name not in resting], "the added worker pod", timeout=300)
        return raised, worker_start(core, namespace, added)
    finally:
        for load in loads:
            load.stop()


def worker_start(core, namespace: str, pod) -> dict[str, float]:
    """From the worker pod's creation: seconds to its init container starting, to its artifacts pulled, to its Ray
    container starting (after KubeRay's wait-gcs-ready init container) and to a Serve replica RUNNING on it; the
    pull's own seconds and bytes (store, node cache); the Ray container's restarts (raylet gives up on a start that
    takes over 30 s, as it can on these shared cores)."""
    wait_for(lambda: helpers.serve_replica_running_on(core, namespace, pod), "a Serve replica RUNNING on the added worker",
             timeout=600, interval=0.5)
    running = time.time()
    pod = core.read_namespaced_pod(pod.metadata.name, namespace)
    created = pod.metadata.creation_timestamp.timestamp()
    pulled = next(s for s in pod.status.init_container_statuses if s.name == "pull-artifacts").state.terminated
    summary = pull_summary(pulled.message) or {}
    ray = pod.status.container_statuses[0].state.running
    return {"started": pulled.started_at.timestamp() - created, "pulled": pulled.finished_at.timestamp() - created,
            "ray": ray.started_at.timestamp() - created if ray else float("nan"), "running": running - created,
            "pull": summary.get("seconds", 0.0),
            "storeMiB": summary.get("storeBytes", 0) / 2**20, "cacheMiB": summary.get("cacheBytes", 0) / 2**20,
            "restarts": pod.status.container_statuses[0].restart_count}


def start_rows(label: str, start: dict[str, float]) -> list[tuple[str, str]]:
    return [(f"added worker, {label}: pod created -> pull started / pulled / Ray container started / Serve replica RUNNING",
             f"{start['started']:.0f} s / {start['pulled']:.0f} s / {start['ray']:.0f} s / {start['running']:.0f} s"),
            (f"added worker, {label}: the pull's own time, MiB from the store / from the node cache",
             f"{start['pull']:.2f} s, {start['storeMiB']:.1f} / {start['cacheMiB']:.1f}"),
            (f"added worker, {label}: Ray container restarts before it joined", f"{start['restarts']}")]


def give_back(core, custom, namespace: str, version: str) -> dict[str, float]:
    """Patch a broken version with a 60 s deadline under load: seconds from the patch to the upgrade given back
    and to the new cluster and its pods gone, requests sent and failed, peak accelerator pods."""
    active = helpers.deployment(custom, namespace)["status"]["rayService"]["activeCluster"]

    def only_the_serving_cluster():
        return helpers.raycluster_names(custom, namespace) == [active] and all(
            pod.metadata.labels.get("ray.io/cluster") == active
            for pod in helpers.pods(core, namespace, "ray.io/is-ray-node=yes"))

    # The upgrade before leaves its old cluster for KubeRay's deletion delay: at rest is without it.
    wait_for(only_the_serving_cluster, "the previous cluster gone", timeout=600, interval=0.5)
    steady = len(helpers.pods(core, namespace, helpers.ACCELERATED_WORKERS))
    load, peak = helpers.Load(sender(core, custom, namespace)), helpers.PodPeak(core, custom, namespace)
    load.start()
    peak.start()
    started = time.monotonic()
    helpers.patch_version_with_deadline(custom, namespace, version, uri(version), DEADLINE_SECONDS)
    wait_for(lambda: helpers.deployment(custom, namespace)["status"].get("abandonedUpgrade"), "given back",
             timeout=DEADLINE_SECONDS + 600, interval=0.5)
    given_back = time.monotonic() - started
    wait_for(only_the_serving_cluster, "the new cluster and its pods gone", timeout=600, interval=0.5)
    gone = time.monotonic() - started
    results = load.stop()
    asked, existing = peak.stop()
    return {"given_back": given_back, "gone": gone, "sent": len(results),
            "failed": sum(status != 200 for _, status, _ in results), "steady": steady, "asked": asked,
            "existing": existing}


def give_back_rows(label: str, figures: dict[str, float]) -> list[tuple[str, str]]:
    return [(f"given back, {label}: patch -> given back (deadline {DEADLINE_SECONDS} s)",
             f"{figures['given_back']:.1f} s"),
            (f"given back, {label}: patch -> new cluster and its pods gone", f"{figures['gone']:.1f} s"),
            (f"given back, {label}: requests sent / failed (goal 0)", f"{figures['sent']} / {figures['failed']}"),
            (f"given back, {label}: peak accelerator pods asked / existing, over {figures['steady']} at rest",
             f"{figures['asked']} / {figures['existing']}")]


def store_and_operator(root: Path, cluster: LocalCluster):
    """The store on the node network with both versions published, the CRDs, and a running operator process."""
    s3 = LocalS3(root / "s3", root / "versitygw.log", tied_to_parent=True, host=nodenet.HOST_IP)
    s3.start()
    s3_client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                             aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
    for seed, version in enumerate(VERSIONS):
        publish_reference_model(s3_client, uri(version), version, root / f"compiled-{version}", seed=seed)
    for version, publish_broken in BROKEN.values():
        publish_broken(s3_client, version, root / f"compiled-{version}", uri=uri(version))
    cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-f", str(EXAMPLE.parents[1] / "crds"))
    cluster.wait_established("crd/berninideployments.bernini.dev")
    operator = OperatorProcess(cluster.kubeconfig, s3.credentials_env, root / "operator.log")
    operator.start()
    return s3, s3_client, operator


def first_deployments(cluster, core, custom, s3, root: Path) -> list[tuple[str, str]]:
    """The first deployment has no node cache: its added worker downloads. The second has one, which its first
    worker fills: its added worker starts from a warm cache."""
    rows = []
    for attempt, label in enumerate(("first deployment", "second deployment (page cache warm)")):
        namespace = f"bench-{attempt}"
        cache = root / "node-cache" if attempt else None
        if cache:
            cache.mkdir()
        ready, mesh = deploy(cluster, core, custom, s3, namespace, cache)
        rows += [(f"apply -> Ready, {label}", f"{ready:.1f} s"), (f"apply -> first mesh, {label}", f"{mesh:.1f} s")]
        raised, start = scale_up(core, custom, namespace)
        if attempt:
            rows.append(("scale-up: load start -> worker replicas raised", f"{raised:.1f} s"))
        rows += start_rows("warm node cache" if attempt else "no node cache", start)
        core.delete_namespace(namespace)
        wait_for(lambda: not core.list_namespaced_pod(namespace).items, f"{namespace} emptied", timeout=300)
    return rows


def upgrades(cluster, core, custom, s3) -> list[tuple[str, str]]:
    """Both strategies under load: NewCluster on one accelerator pod at rest, Incremental on two (NewCluster would
    ask four of the three inf2 nodes and never finish)."""
    rows = []
    deploy(cluster, core, custom, s3, "upgrade-newcluster")
    rows += upgrade_rows("NewCluster, one pod at rest", upgrade(core, custom, "upgrade-newcluster"))
    rows += give_back_rows("NewCluster, artifacts fail their checksum",
                           give_back(core, custom, "upgrade-newcluster", BROKEN["NewCluster"][0]))
    core.delete_namespace("upgrade-newcluster")
    wait_for(lambda: not core.list_namespaced_pod("upgrade-newcluster").items, "the namespace emptied", timeout=300)
    deploy(cluster, core, custom, s3, "upgrade-incremental", incremental=True)
    wait_for(lambda: len(helpers.pods(core, "upgrade-incremental", helpers.ACCELERATED_WORKERS)) == 2,
             "two workers at rest", timeout=300, interval=2)
    rows += upgrade_rows("Incremental, two pods at rest", upgrade(core, custom, "upgrade-incremental"))
    rows += give_back_rows("Incremental, replicas raise on start",
                           give_back(core, custom, "upgrade-incremental", BROKEN["Incremental"][0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upgrades-only", action="store_true",
                        help="a warm cluster and the upgrades only (about 30 minutes)")
    only_upgrades = parser.parse_args().upgrades_only
    root = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    rows = []
    for cold in (False,) if only_upgrades else (True, False):
        cluster, seconds = cluster_up(root, cold)
        rows.append((f"cluster up, image store {'cold (import)' if cold else 'warm'}", f"{seconds:.1f} s"))
        if cold:
            cluster.down()
    s3, _, operator = store_and_operator(root, cluster)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    try:
        if not only_upgrades:
            rows += first_deployments(cluster, core, custom, s3, root)
        rows += upgrades(cluster, core, custom, s3)
    finally:
        operator.stop()
        s3.stop()
        cluster.down()
    width = max(len(name) for name, _ in rows)
    print(f"\n{'figure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
