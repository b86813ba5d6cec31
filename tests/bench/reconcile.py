"""make bench-reconcile: the operator against the KubeRay operator (the Go peer) on one local control plane.

(a) apply -> RayService created, p50/p99, beside RayService -> RayCluster created for KubeRay
(b) time for N BerniniDeployments to converge (Rendered=True at their generation)
(c) API writes by the operator during an idle period of resyncs (must be 0)
(d) operator RSS with N objects
"""

import argparse
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import yaml
from kubernetes import client, config, watch

from bernini.api import GROUP, PLURAL, VERSION
from localdev import LocalCluster
from localdev.placeholder_artifacts import publish_placeholder_artifacts
from localdev.s3server import LocalS3
from tests.operator_process import OperatorProcess
from tests.bench.figures import percentile

ROOT = Path(__file__).parents[2]
NAMESPACE = "bench"
URI = "s3://bench/bernini/1.0.0/"


class AddedTimes:
    """First-seen times of RayServices and RayClusters, from watches (one clock for both operators)."""

    def __init__(self, api: client.ApiClient):
        self.custom = client.CustomObjectsApi(api)
        self.rayservices: dict[str, float] = {}
        self.rayclusters: dict[str, float] = {}  # keyed by owning RayService
        for plural, sink in (("rayservices", self.rayservices), ("rayclusters", self.rayclusters)):
            threading.Thread(target=self._watch, args=(plural, sink), daemon=True).start()

    def _watch(self, plural: str, sink: dict[str, float]) -> None:
        stream = watch.Watch().stream(self.custom.list_namespaced_custom_object, "ray.io", "v1", NAMESPACE, plural,
                                      timeout_seconds=3600)
        for event in stream:
            if event["type"] != "ADDED":
                continue
            metadata = event["object"]["metadata"]
            owner = metadata.get("ownerReferences", [{}])[0].get("name", metadata["name"]) if plural == "rayclusters" else metadata["name"]
            sink.setdefault(owner, time.monotonic())


def deployment(name: str, endpoint: str) -> dict:
    body = yaml.safe_load((ROOT / "examples" / "bernini-minimal.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    body["spec"]["model"]["artifactsUri"] = URI
    body["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": endpoint}
    return body


def converged(custom: client.CustomObjectsApi) -> int:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    done = 0
    for item in items:
        for condition in item.get("status", {}).get("conditions", []):
            if condition["type"] == "Rendered" and condition["status"] == "True" \
                    and condition["observedGeneration"] == item["metadata"]["generation"]:
                done += 1
    return done


def writes(operator: OperatorProcess) -> float:
    return sum(v for k, v in operator.metrics().items() if k.startswith("bernini_api_writes_total{"))


def reconciles(operator: OperatorProcess) -> float:
    return sum(v for k, v in operator.metrics().items() if k.startswith("bernini_reconcile_total{"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=300)
    parser.add_argument("--resync-seconds", type=float, default=30)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    cluster = LocalCluster.in_directory(work, tied_to_parent=True)
    s3 = LocalS3(work / "s3", work / "logs" / "versitygw.log", tied_to_parent=True)
    operator = None
    try:
        print(f"local control plane up in {cluster.up():.1f}s")
        s3.start()
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.wait_established("crd/berninideployments.bernini.dev")
        cluster.kubectl("create", "namespace", NAMESPACE)
        operator = OperatorProcess(cluster.kubeconfig, s3.credentials_env, work / "logs" / "operator.log",
                                   resync_seconds=args.resync_seconds)
        operator.start()
        publish_placeholder_artifacts(
            boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                         aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key),
            URI, "1.0.0")
        api = config.new_client_from_config(str(cluster.kubeconfig))
        custom = client.CustomObjectsApi(api)
        added = AddedTimes(api)
        time.sleep(1)

        # (a) one at a time, so each latency is that of an otherwise idle operator
        created: dict[str, float] = {}
        for i in range(args.latency_samples):
            name = f"lat-{i:03d}"
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, deployment(name, s3.endpoint_url))
            created[name] = time.monotonic()
            deadline = time.monotonic() + 30
            while name not in added.rayclusters and time.monotonic() < deadline:
                time.sleep(0.005)
        ours = [added.rayservices[n] - created[n] for n in created if n in added.rayservices]
        theirs = [added.rayclusters[n] - added.rayservices[n] for n in created if n in added.rayclusters and n in added.rayservices]

        # (b) the rest in a burst
        burst = [f"burst-{i:04d}" for i in range(args.count - args.latency_samples)]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, deployment(n, s3.endpoint_url)), burst))
        submitted = time.monotonic() - started
        while converged(custom) < args.count and time.monotonic() - started < 900:
            time.sleep(0.5)
        ours_converged = time.monotonic() - started
        while len(added.rayclusters) < args.count and time.monotonic() - started < 900:
            time.sleep(0.5)
        kuberay_all = time.monotonic() - started

        # (d) memory with every object cached
        memory = rss_mib(operator.process.pid)

        # (c) settle, then count writes through an idle period of resyncs
        previous = -1.0
        while (current := writes(operator)) != previous:
            previous = current
            time.sleep(10)
        writes_before, reconciles_before = writes(operator), reconciles(operator)
        time.sleep(args.idle_seconds)
        idle_writes = writes(operator) - writes_before
        idle_reconciles = reconciles(operator) - reconciles_before

        p50_ours, p99_ours = statistics.median(ours), percentile(ours, 0.99)
        p50_theirs, p99_theirs = statistics.median(theirs), percentile(theirs, 0.99)
        summary = {
            "a_apply_to_rayservice_ms": {"p50": round(p50_ours * 1000, 1), "p99": round(p99_ours * 1000, 1), "n": len(ours)},
            "a_kuberay_rayservice_to_raycluster_ms": {"p50": round(p50_theirs * 1000, 1), "p99": round(p99_theirs * 1000, 1), "n": len(theirs)},
            "a_ratio_ours_to_kuberay_p50": round(p50_ours / p50_theirs, 2),
            "a_ratio_ours_to_kuberay_p99": round(p99_ours / p99_theirs, 2),
            "b_objects": args.count,
            "b_burst_submit_s": round(submitted, 1),
            "b_all_rendered_s": round(ours_converged, 1),
            "b_kuberay_all_rayclusters_s": round(kuberay_all, 1),
            "c_idle_seconds": args.idle_seconds,
            "c_resync_seconds": args.resync_seconds,
            "c_idle_reconciles": int(idle_reconciles),
            "c_idle_api_writes": int(idle_writes),
            "d_operator_rss_mib": round(memory, 1),
        }
        print(json.dumps(summary, indent=2))
        print(f"(a) apply->RayService p50 {summary['a_apply_to_rayservice_ms']['p50']} ms / p99 "
              f"{summary['a_apply_to_rayservice_ms']['p99']} ms; KubeRay RayService->RayCluster p50 "
              f"{summary['a_kuberay_rayservice_to_raycluster_ms']['p50']} ms / p99 "
              f"{summary['a_kuberay_rayservice_to_raycluster_ms']['p99']} ms; ratio p50 {summary['a_ratio_ours_to_kuberay_p50']}")
        print(f"(b) {args.count} BerniniDeployments rendered in {ours_converged:.1f}s (KubeRay: all RayClusters in {kuberay_all:.1f}s)")
        print(f"(c) {int(idle_writes)} API writes in {args.idle_seconds:.0f}s idle ({int(idle_reconciles)} resync reconciles)")
        print(f"(d) operator RSS {memory:.0f} MiB with {args.count} objects")
    finally:
        if operator:
            operator.stop()
        s3.stop()
        cluster.down()


if __name__ == "__main__":
    main()
