"""`make bench-chaos`: what each fault costs the people sending requests, on real pods.

One deployment on the real-node cluster (one CPU node, two inf2.xlarge-shaped nodes), one client sending
requests one after another through the Serve Service the whole time. Each fault is injected, healed where it
heals by hand (a killed operator is started again, as its Deployment would), and the bench waits until the
object is Ready=True at its generation and a request succeeds again. Per fault it prints requests sent / failed
in that window, seconds from the injection to Ready again, operator restarts, worker pods restarted or
replaced, and whether any object (BerniniDeployment, RayService, RayCluster) or stored artifact was lost or
duplicated. The head pod is killed twice: as the example runs it, then with spec.gcsFaultTolerance on a real
Redis (set up before that fault, outside its window), so the two rows compare in one run.

`python -m tests.bench.chaos FAULT...` runs only the named faults (function names below), in the order below.

Goals: a control-plane fault (operator, API server, store) costs 0 failed requests and 0 lost objects; the
head's loss with GCS fault tolerance restarts no worker and fails no request. The local sizing has one worker
with one replica per stage, so a worker's loss is reported as it is.
"""

import json
import os
from collections import Counter
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from bernini.api import GROUP, PLURAL, VERSION
from localdev import LocalCluster, nodenet
from localdev.redis import PASSWORD_KEY, PASSWORD_SECRET, LocalRedis
from localdev.s3server import LocalS3
from localdev.waiting import wait_for
from tests.bench.e2e import VERSIONS, deploy, store_and_operator, uri
from tests.operator_process import OperatorProcess
from tests.realnodes import helpers

NAMESPACE = "chaos"
STORE_OUTAGE_SECONDS = 120


class SteadyLoad(threading.Thread):
    """One client, one request after another to the Serve Service's ClusterIP (looked up once: the data path must
    not depend on the API server), each recorded as (monotonic start, HTTP status or -1)."""

    def __init__(self, core):
        super().__init__(daemon=True)
        self.address = helpers.cluster_ip(core, NAMESPACE, "bernini-serve-svc")
        self.results, self.stopping = [], threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                status = helpers.post_prompt(self.address, timeout=60)
            except Exception as error:  # noqa: BLE001  any failure to get an answer is a failed request
                status = type(error).__name__  # the kind of failure: a timeout is not a refused connection
                time.sleep(0.5)  # nothing answers: do not spin
            self.results.append((started, status))

    def since(self, moment: float) -> list[int | str]:
        return [status for started, status in list(self.results) if started >= moment]


@dataclass
class Bench:
    cluster: LocalCluster
    s3: LocalS3
    s3_client: object
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    operator: OperatorProcess
    load: SteadyLoad
    operator_restarts: int = 0

    def supervise(self) -> None:
        """Start the operator again if it exited (counted), as its Deployment's ReplicaSet would."""
        if self.operator.process.poll() is not None:
            self.operator.start(timeout=180)  # imports take long on two cores busy starting Ray pods
            self.operator_restarts += 1

    def inventory(self) -> dict:
        body = helpers.deployment(self.custom, NAMESPACE)
        rayservices = self.custom.list_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayservices")["items"]
        clusters = self.custom.list_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayclusters")["items"]
        stored = {item["Key"]: item["ETag"] for version in VERSIONS
                  for item in self.s3_client.list_objects_v2(Bucket="artifacts", Prefix=uri(version)[len("s3://artifacts/"):])
                  .get("Contents", [])}
        return {"deployment": body["metadata"]["uid"], "rayservices": sorted(r["metadata"]["uid"] for r in rayservices),
                "rayclusters": len([c for c in clusters if not c["metadata"].get("deletionTimestamp")]),
                "artifacts": stored}

    def ready_again(self, healed: float, timeout: float = 600) -> None:
        """Until Ready=True at the current generation, one RayCluster left, and a request sent after the fault
        healed (healed: monotonic time) was served."""
        def settled():
            self.supervise()
            try:
                return self._settled(healed)
            except Exception:  # noqa: BLE001  the API server itself may be what is coming back
                return False
        wait_for(settled, "Ready=True again and a request served", timeout=timeout, interval=1,
                 explain=lambda: str(helpers.deployment(self.custom, NAMESPACE).get("status", {}).get("conditions")))

    def _settled(self, healed: float) -> bool:
        body = helpers.deployment(self.custom, NAMESPACE)
        ready = helpers.condition(body, "Ready")
        clusters = self.custom.list_namespaced_custom_object("ray.io", "v1", NAMESPACE, "rayclusters")["items"]
        return (ready.get("status") == "True" and ready.get("observedGeneration") == body["metadata"]["generation"]
                and len(clusters) == 1 and 200 in self.load.since(healed))


def _pid_of(cluster: LocalCluster, executable: str, marker: str = "") -> int:
    for pid, path in cluster.pids.items():
        if path.endswith(executable) and marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    raise LookupError(f"no {executable} {marker} among the cluster's processes")


def kill_operator_mid_reconcile(bench: Bench) -> str:
    window = bench.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "bernini")["spec"].get(
        "autoscaling", {}).get("lookBackPeriodSeconds", 12)
    bench.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "bernini",
                                                {"spec": {"autoscaling": {"lookBackPeriodSeconds": window + 1}}})
    time.sleep(0.2)  # the watch event is in, the reconcile under way
    bench.operator.kill()
    time.sleep(2)
    return "a Serve-only change, SIGKILL 0.2 s after the patch"


def kill_operator_mid_upgrade(bench: Bench) -> str:
    version = helpers.deployment(bench.custom, NAMESPACE)["spec"]["model"]["version"]
    target = VERSIONS[1] if version == VERSIONS[0] else VERSIONS[0]
    bench.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "bernini",
                                                {"spec": {"model": {"version": target, "artifactsUri": uri(target)}}})
    wait_for(lambda: helpers.rayservice(bench.custom, NAMESPACE).get("status", {}).get("pendingServiceStatus", {})
             .get("rayClusterName"), "the pending cluster", timeout=120, interval=0.5)
    bench.operator.kill()
    time.sleep(5)
    return f"upgrade to {target}, SIGKILL once the pending cluster exists"


def restart_api_server(bench: Bench) -> str:
    pid = _pid_of(bench.cluster, "kube-apiserver")
    os.kill(pid, signal.SIGKILL)
    bench.cluster.pids.pop(pid)
    time.sleep(5)
    bench.cluster.start_process("kube-apiserver", bench.cluster._apiserver_argv())
    wait_for(lambda: bench.cluster._get(f"{bench.cluster.server}/readyz"), "the API server", timeout=120)
    return "SIGKILL, 5 s down, started again"


def black_hole_the_store(bench: Bench) -> str:
    """Packets to the store's port are dropped (new and open connections alike) for STORE_OUTAGE_SECONDS."""
    rule = ["INPUT", "-p", "tcp", "--dport", str(bench.s3.port), "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        time.sleep(STORE_OUTAGE_SECONDS)
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    return f"{STORE_OUTAGE_SECONDS} s of dropped packets"


def black_hole_the_store_during_a_scale_up(bench: Bench) -> str:
    """The fused stages' minimum goes from 1 to 2 (a second worker on the other inf2 node, which must pull
    the artifacts) just as the store goes dark."""
    bench.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "bernini",
                                                {"spec": {"stages": {"fused": {"minReplicas": 2}}}})
    black_hole_the_store(bench)
    return f"fused minReplicas 1 -> 2, then {STORE_OUTAGE_SECONDS} s of dropped packets"


def _active_cluster(bench: Bench) -> str:
    return helpers.deployment(bench.custom, NAMESPACE)["status"]["rayService"]["activeCluster"]


def _delete_and_await_replacement(bench: Bench, selector: str) -> str:
    """Delete the first pod of the serving cluster the selector finds with no grace period; return once a pod of
    another name is ready in its place, so that Ready again counts the replacement's start and not the seconds
    before anyone noticed."""
    selector = f"{selector},ray.io/cluster={_active_cluster(bench)}"
    victim = helpers.pods(bench.core, NAMESPACE, selector)[0].metadata.name
    bench.core.delete_namespaced_pod(victim, NAMESPACE, grace_period_seconds=0)

    def replaced():
        return any(pod.metadata.name != victim and pod.status.phase == "Running" and not pod.metadata.deletion_timestamp
                   and all(c.ready for c in pod.status.container_statuses or [])
                   for pod in helpers.pods(bench.core, NAMESPACE, selector))
    wait_for(replaced, f"a pod ({selector}) in place of {victim}", timeout=600, interval=1)
    return f"deleted {victim} with no grace period; counted until its replacement is ready"


def kill_a_worker_pod(bench: Bench) -> str:
    return _delete_and_await_replacement(bench, helpers.ACCELERATED_WORKERS)


HEAD_LOSS_WATCH_SECONDS = 120  # past Ray's 60 s for a worker to reach a GCS that came back without its state


def kill_the_head_pod(bench: Bench) -> str:
    """The head of the serving cluster deleted with no grace period; the window stays open for
    HEAD_LOSS_WATCH_SECONDS after its replacement is ready, so that workers that give up on the lost GCS count."""
    started = time.monotonic()
    how = _delete_and_await_replacement(bench, "ray.io/node-type=head")
    replaced = time.monotonic() - started
    time.sleep(HEAD_LOSS_WATCH_SECONDS)
    return f"{how}, after {replaced:.1f} s; watched {HEAD_LOSS_WATCH_SECONDS} s more"


def kill_the_head_pod_with_gcs_fault_tolerance(bench: Bench) -> str:
    return kill_the_head_pod(bench)


def tolerate_head_loss(bench: Bench, root: Path) -> None:
    """Before kill_the_head_pod_with_gcs_fault_tolerance: a real Redis, its password in a Secret, and the
    deployment's spec.gcsFaultTolerance pointing at it (a NewCluster upgrade, awaited here)."""
    redis = LocalRedis(root / "redis", root / "redis.log", host=nodenet.HOST_IP, tied_to_parent=True)
    redis.start()
    bench.core.create_namespaced_secret(NAMESPACE, redis.secret_manifest(NAMESPACE))
    # The scale-up fault left the fused minimum at 2; the head rows compare on the same worker count.
    bench.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, "bernini", {"spec": {
        "stages": {"fused": {"minReplicas": 1}},
        "gcsFaultTolerance": {"redisAddress": redis.address,
                              "passwordSecret": {"name": PASSWORD_SECRET, "key": PASSWORD_KEY}}}})
    time.sleep(10)  # the operator's apply, and KubeRay's pending cluster
    bench.ready_again(healed=time.monotonic(), timeout=900)
    active = _active_cluster(bench)
    wait_for(lambda: all(pod.metadata.labels.get("ray.io/cluster") == active
                         for pod in helpers.pods(bench.core, NAMESPACE, "ray.io/is-ray-node=yes")),
             "only the fault-tolerant cluster's pods", timeout=600, interval=2)


def stop_a_kubelet(bench: Bench) -> str:
    """The inf2 worker's node loses its kubelet for 60 s (past the 40 s after which the node is NotReady)."""
    node = helpers.pods(bench.core, NAMESPACE, helpers.ACCELERATED_WORKERS)[0].spec.node_name
    pid = _pid_of(bench.cluster, "kubelet", f"--hostname-override={node}")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    os.kill(pid, signal.SIGKILL)
    bench.cluster.pids.pop(pid)
    time.sleep(60)
    bench.cluster.start_process(f"kubelet-{node}", argv)
    return f"kubelet of {node} killed, 60 s down"


def fill_the_artifact_volume(bench: Bench) -> str:
    """A file past the volume's sizeLimit, written into the worker's artifacts emptyDir from the node's side."""
    worker = helpers.pods(bench.core, NAMESPACE, helpers.ACCELERATED_WORKERS)[0]
    limit = next(v.empty_dir.size_limit for v in worker.spec.volumes if v.name == "artifacts")
    found = list(bench.cluster.state_dir.glob(f"**/pods/{worker.metadata.uid}/volumes/kubernetes.io~empty-dir/artifacts"))
    with (found[0] / "filler").open("wb") as filler:
        filler.truncate(0)
        for _ in range(_bytes(limit) // (1 << 20) + 64):
            filler.write(b"\0" * (1 << 20))
    return f"wrote past the {limit} sizeLimit of {worker.metadata.name}'s artifacts volume"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


FAULTS = [kill_operator_mid_reconcile, kill_operator_mid_upgrade, restart_api_server, black_hole_the_store,
          kill_a_worker_pod, kill_the_head_pod, stop_a_kubelet, fill_the_artifact_volume,
          black_hole_the_store_during_a_scale_up,  # it takes the second inf2 node the upgrade needs
          kill_the_head_pod_with_gcs_fault_tolerance]  # last: its setup rolls the cluster


def run_fault(bench: Bench, fault) -> dict:
    before = bench.inventory()
    workers = helpers.workers(bench.core, NAMESPACE)
    restarts = bench.operator_restarts
    started = time.monotonic()
    how = fault(bench)
    bench.ready_again(healed=time.monotonic())
    seconds = time.monotonic() - started
    time.sleep(5)  # a late failure still counts
    statuses = bench.load.since(started)
    after = bench.inventory()
    now_running = helpers.workers(bench.core, NAMESPACE)
    lost = [key for key in ("deployment", "artifacts") if before[key] != after[key]]
    if before["rayservices"] != after["rayservices"]:
        lost.append("rayservice")
    if after["rayclusters"] != 1:
        lost.append(f"{after['rayclusters']} rayclusters")
    return {"fault": fault.__name__.replace("_", " "), "how": how, "sent": len(statuses),
            "failed": sum(status != 200 for status in statuses), "ready_s": seconds,
            "failures": dict(Counter(str(status) for status in statuses if status != 200)),
            "operator_restarts": bench.operator_restarts - restarts, "lost_or_duplicated": lost or "none",
            "workers_restarted": sum(now_running.get(name) != state for name, state in workers.items())}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    cluster = LocalCluster.in_directory(root / "cluster", real_nodes=True, tied_to_parent=True)
    cluster.up()
    s3, s3_client, operator = store_and_operator(root, cluster)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    rows = []
    try:
        deploy(cluster, core, custom, s3, NAMESPACE)
        bench = Bench(cluster, s3, s3_client, core, custom, operator, SteadyLoad(core))
        bench.load.start()
        chosen = [fault for fault in FAULTS if not sys.argv[1:] or fault.__name__ in sys.argv[1:]]
        for fault in chosen:
            try:
                if fault is kill_the_head_pod_with_gcs_fault_tolerance:
                    tolerate_head_loss(bench, root)
                rows.append(run_fault(bench, fault))
            except Exception as error:  # noqa: BLE001  one fault that never heals must not hide the others
                rows.append({"fault": fault.__name__.replace("_", " "), "how": f"did not recover: {error}"[:200],
                             "sent": 0, "failed": 0, "ready_s": float("nan"), "operator_restarts": 0,
                             "lost_or_duplicated": "?", "workers_restarted": "?"})
            print(json.dumps(rows[-1]), flush=True)
        bench.load.stopping.set()
    finally:
        operator.stop()
        s3.stop()
        cluster.down()
    print(f"\n{'fault':<44} {'sent':>5} {'failed':>6} {'Ready again':>12} {'operator restarts':>18} "
          f"{'workers restarted':>18}  lost or duplicated")
    for row in rows:
        print(f"{row['fault']:<44} {row['sent']:>5} {row['failed']:>6} {row['ready_s']:>10.1f} s "
              f"{row['operator_restarts']:>18} {row['workers_restarted']:>18}  {row['lost_or_duplicated']}")
    print("\n" + "\n".join(f"{row['fault']}: {row['how']}; failures {row.get('failures') or 'none'}" for row in rows))


if __name__ == "__main__":
    main()
