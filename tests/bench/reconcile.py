"""make bench-reconcile: the operator at scale, beside the KubeRay operator (the Go peer) on one local control plane.

(a) our latency alone: apply -> RayService created, one object at a time (p50, p90 and the maximum of n)
(b) a burst of --count BerniniDeployments: seconds until every one is Rendered at its generation; operator RSS
(c) measures both operators have, over the same window (the burst, then until KubeRay has made every RayCluster
    or --kuberay-seconds passed): CPU-seconds per 1,000 reconciles (each process's utime+stime from /proc) and
    API requests per reconcile (the API server's audit log, by user agent); ours per new object by verb and
    resource; where our CPU goes until all are Rendered (py-spy)
(d) idle, with KubeRay stopped so nothing changes underneath: API writes during a period of resyncs (goal: 0)

Burst objects are suspended: KubeRay still creates a RayCluster for each, but no pods, so the figures are
the operators' and not those of the scheduler placing 15,000 KWOK pods.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from bernini.api import GROUP, PLURAL, VERSION
from localdev import LocalCluster
from localdev.placeholder_artifacts import publish_placeholder_artifacts
from localdev.s3server import LocalS3
from localdev.waiting import wait_for
from tests.bench.figures import percentile
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).parents[2]
NAMESPACE = "bench"
URI = "s3://bench/bernini/1.0.0/"
OURS = ("bernini-operator", "kopf/")  # our client's user agent, and kopf's for the watches
KUBERAY = ("kuberay-operator/",)


class Seen:
    """First times seen, from watches (no 5,000-object LISTs while measuring): RayServices and RayClusters
    created, BerniniDeployments Rendered at their generation."""

    def __init__(self, api: client.ApiClient):
        self.custom = client.CustomObjectsApi(api)
        self.rayservices: dict[str, float] = {}
        self.rayclusters: dict[str, float] = {}
        self.rendered: dict[str, float] = {}
        for group, plural, record in (("ray.io", "rayservices", self._added(self.rayservices)),
                                      ("ray.io", "rayclusters", self._added(self.rayclusters)),
                                      (GROUP, PLURAL, self._rendered)):
            threading.Thread(target=self._watch, args=(group, plural, record), daemon=True).start()

    def _watch(self, group: str, plural: str, record) -> None:
        """Never stops: a watch the API server ends (its timeout, a slow consumer, a dropped connection) resumes
        from the last resourceVersion seen; one too old for the server (410 Gone) is replaced by a LIST, whose
        objects count as seen when listed."""
        version = VERSION if group == GROUP else "v1"
        resource_version = ""
        while True:
            try:
                if not resource_version:
                    listed = self.custom.list_namespaced_custom_object(group, version, NAMESPACE, plural)
                    for item in listed["items"]:
                        record({"type": "ADDED", "object": item})
                    resource_version = listed["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(self.custom.list_namespaced_custom_object, group, version,
                                                  NAMESPACE, plural, resource_version=resource_version,
                                                  allow_watch_bookmarks=True, timeout_seconds=300):
                    resource_version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        record(event)
            except ApiException as error:
                if error.status == 410:
                    resource_version = ""
                else:
                    time.sleep(1)
            except Exception:  # noqa: BLE001  a broken connection: resume where it ended
                time.sleep(1)

    @staticmethod
    def _added(sink: dict[str, float]):
        def record(event: dict) -> None:
            if event["type"] == "ADDED":
                sink.setdefault(event["object"]["metadata"]["name"], time.monotonic())
        return record

    def _rendered(self, event: dict) -> None:
        item = event["object"]
        if any(c["type"] == "Rendered" and c["status"] == "True" and c["observedGeneration"] == item["metadata"]["generation"]
               for c in item.get("status", {}).get("conditions", [])):
            self.rendered.setdefault(item["metadata"]["name"], time.monotonic())


def missing(custom: client.CustomObjectsApi, seen: dict[str, float], names: list[str]) -> str:
    """What a timeout should say: how many were never seen Rendered, and the conditions a few of them show."""
    absent = [name for name in names if name not in seen]
    shown = []
    for name in absent[:5]:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        conditions = {c["type"]: f"{c['status']}/{c['reason']}" for c in body.get("status", {}).get("conditions", [])}
        shown.append(f"{name} (generation {body['metadata']['generation']}): {conditions or 'no status'}")
    return f"{len(absent)} of {len(names)} never seen Rendered; " + "; ".join(shown)


def deployment(name: str, endpoint: str, suspend: bool = False) -> dict:
    body = yaml.safe_load((ROOT / "examples" / "bernini-minimal.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    body["spec"]["model"]["artifactsUri"] = URI
    body["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": endpoint}
    body["spec"]["suspend"] = suspend
    return body


def metric_sum(url: str, prefix: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rpartition(" ")[2]) for line in lines if line.startswith(prefix))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def audited_requests(log: Path, start: int, end: int) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Requests in the audit log between two byte offsets: by caller, and ours per object name by verb and
    resource (where our requests go)."""
    counts = {"ours": 0, "kuberay": 0}
    ours: dict[str, dict[str, int]] = {}
    with log.open("rb") as handle:
        handle.seek(start)
        for line in handle.read(end - start).splitlines():
            entry = json.loads(line)
            agent = entry.get("userAgent", "")
            if agent.startswith(OURS):
                counts["ours"] += 1
                target = entry.get("objectRef", {})
                kind = "/".join(filter(None, (target.get("resource"), target.get("subresource"))))
                what = f"{entry['verb']} {kind or entry.get('requestURI', '?')}"
                per_object = ours.setdefault(target.get("name", ""), {})
                per_object[what] = per_object.get(what, 0) + 1
            elif agent.startswith(KUBERAY):
                counts["kuberay"] += 1
    return counts, ours


class Profile:
    """py-spy sampling the operator over the burst: where its CPU goes, by function (inclusive and self), so a
    figure comes with its reason."""

    def __init__(self, pid: int, out: Path):
        self.out = out
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--rate", "50",
             "--format", "raw", "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, top: int = 12) -> dict[str, dict[str, float]]:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            total += int(count)
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + int(count)
            own[frames[-1]] = own.get(frames[-1], 0) + int(count)

        def share(counts: dict[str, int]) -> dict[str, float]:
            ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
            return {frame: round(100 * n / total, 1) for frame, n in ranked}
        ours = {frame: n for frame, n in inclusive.items() if "bernini/" in frame}
        return {"samples": total, "ours_inclusive_percent": share(ours), "self_percent": share(own)}


def per_new_object(requests: dict[str, dict[str, int]], names: set[str], count: int) -> dict[str, float]:
    """Our mean requests per object over names, by verb and resource, with their total. A create's audit entry
    names no object: creates count over all count objects, each of which had one in the burst."""
    means: dict[str, float] = {}
    for name in names:
        for what, n in requests.get(name, {}).items():
            means[what] = means.get(what, 0) + n / max(1, len(names))
    for what, n in requests.get("", {}).items():
        if what.startswith("create "):
            means[what] = means.get(what, 0) + n / count
    ranked = {what: round(n, 2) for what, n in sorted(means.items(), key=lambda item: -item[1])}
    return {"objects": len(names), "total": round(sum(means.values()), 2), **ranked}


def operator_writes(operator: OperatorProcess) -> float:
    return sum(v for k, v in operator.metrics().items() if k.startswith("bernini_api_writes_total{"))


class Process:
    """CPU time and reconcile count of one operator, sampled at the burst's start and end."""

    def __init__(self, pid: int, reconciles):
        self.pid, self.reconciles = pid, reconciles

    def sample(self) -> tuple[float, float]:
        return cpu_seconds(self.pid), self.reconciles()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--resync-seconds", type=float, default=30)
    parser.add_argument("--kuberay-seconds", type=float, default=600,
                        help="how long KubeRay may go on creating RayClusters after ours are all Rendered")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    cluster = LocalCluster.in_directory(work, tied_to_parent=True, audit=True)
    s3 = LocalS3(work / "s3", work / "logs" / "versitygw.log", tied_to_parent=True)
    operator = None
    try:
        print(f"local control plane up in {cluster.up():.1f}s (logs in {work / 'logs'})", flush=True)
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
        seen = Seen(api)
        time.sleep(1)

        # (a) one at a time, so each latency is that of an otherwise idle operator
        latencies = []
        for i in range(args.latency_samples):
            name = f"lat-{i:03d}"
            created = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                   deployment(name, s3.endpoint_url, suspend=True))
            wait_for(lambda: name in seen.rayservices, f"RayService {name}", timeout=30, interval=0.002)
            latencies.append(seen.rayservices[name] - created)

        # (b) and (c): the burst
        kuberay_pid = next(pid for pid, exe in cluster.pids.items() if exe.endswith("ray-operator"))
        kuberay_metrics = f"http://127.0.0.1:{cluster.ports['kuberay-metrics']}/metrics"
        processes = {
            "ours": Process(operator.process.pid, lambda: metric_sum(
                f"http://127.0.0.1:{operator.metrics_port}/metrics", "bernini_reconcile_total{")),
            "kuberay": Process(kuberay_pid, lambda: metric_sum(kuberay_metrics, "controller_runtime_reconcile_total{")),
        }
        before = {name: p.sample() for name, p in processes.items()}
        profile = Profile(operator.process.pid, work / "logs" / "operator-profile.txt")
        audit_start = cluster.audit_log.stat().st_size
        names = [f"burst-{i:05d}" for i in range(args.count)]
        total = args.count + args.latency_samples
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, deployment(n, s3.endpoint_url, suspend=True)), names))
        submitted = time.monotonic() - started
        wait_for(lambda: len(seen.rendered) >= total, f"{total} Rendered", timeout=1800, interval=0.5,
                 explain=lambda: missing(custom, seen.rendered, ["lat-%03d" % i for i in range(args.latency_samples)]
                                         + names))
        ours_done = max(seen.rendered[name] for name in names) - started
        memory = rss_mib(operator.process.pid)
        where = profile.stop()
        # KubeRay goes at its own pace (its client's rate limit, several requests and Events per RayService): it
        # gets a bounded window, and both operators are measured over the same one.
        deadline = time.monotonic() + args.kuberay_seconds
        while len(seen.rayclusters) < total and time.monotonic() < deadline:
            time.sleep(0.5)
        window = time.monotonic() - started
        kuberay_made = len(seen.rayclusters)
        kuberay_done = max(seen.rayclusters.values()) - started if kuberay_made >= total else None
        after = {name: p.sample() for name, p in processes.items()}
        requests, our_requests = audited_requests(cluster.audit_log, audit_start, cluster.audit_log.stat().st_size)
        # Objects KubeRay has made a RayCluster for: their count includes the status patch mirroring its report.
        reported = {cluster_name.rsplit("-", 1)[0] for cluster_name in seen.rayclusters} & set(names)

        # (d) with KubeRay stopped, so nothing changes underneath: settle, then count writes through resyncs
        os.kill(kuberay_pid, signal.SIGSTOP)

        previous = -1.0
        while (current := operator_writes(operator)) != previous:
            previous = current
            time.sleep(args.resync_seconds + 5)
        writes_before = operator_writes(operator)
        reconciles_before = processes["ours"].reconciles()
        time.sleep(args.idle_seconds)
        idle_writes = operator_writes(operator) - writes_before
        idle_reconciles = processes["ours"].reconciles() - reconciles_before
        os.kill(kuberay_pid, signal.SIGCONT)

        burst = {}
        for name in processes:
            cpu = after[name][0] - before[name][0]
            reconciles = after[name][1] - before[name][1]
            burst[name] = {"cpu_s": round(cpu, 1), "reconciles": int(reconciles), "api_requests": requests[name],
                           "cpu_s_per_1000_reconciles": round(1000 * cpu / reconciles, 2) if reconciles else None,
                           "api_requests_per_reconcile": round(requests[name] / reconciles, 2) if reconciles else None}
        summary = {
            "a_apply_to_rayservice_ms": {"p50": round(statistics.median(latencies) * 1000, 1),
                                         "p90": round(percentile(latencies, 0.9) * 1000, 1),
                                         "max": round(max(latencies) * 1000, 1), "n": len(latencies)},
            "b_objects": args.count,
            "b_burst_submit_s": round(submitted, 1),
            "b_all_rendered_s": round(ours_done, 1),
            "b_kuberay_all_rayclusters_s": kuberay_done and round(kuberay_done, 1),
            "b_kuberay_rayclusters_made": kuberay_made,
            "c_window_s": round(window, 1),
            "b_operator_rss_mib": round(memory, 1),
            "c_burst": burst,
            "c_our_requests_per_new_object": per_new_object(our_requests, reported, args.count),
            "c_operator_profile": where,
            "d_idle_seconds": args.idle_seconds,
            "d_resync_seconds": args.resync_seconds,
            "d_idle_reconciles": int(idle_reconciles),
            "d_idle_api_writes": int(idle_writes),
        }
        print(json.dumps(summary, indent=2))
        a = summary["a_apply_to_rayservice_ms"]
        print(f"(a) apply -> RayService: p50 {a['p50']} ms, p90 {a['p90']} ms, max {a['max']} ms (n={a['n']})")
        theirs = (f"all created in {kuberay_done:.1f}s" if kuberay_done else
                  f"{kuberay_made} of {total} created in {window:.0f}s ({kuberay_made / window:.1f} per second)")
        print(f"(b) {args.count} BerniniDeployments in a burst: all Rendered in {ours_done:.1f}s "
              f"(submitting took {submitted:.1f}s, ratio {ours_done / submitted:.1f}); KubeRay's RayClusters {theirs}; "
              f"operator RSS {memory:.0f} MiB")
        for name, figures in burst.items():
            print(f"(c) {name:<8} {figures['cpu_s']:7.1f} CPU-s, {figures['reconciles']:7d} reconciles, "
                  f"{figures['cpu_s_per_1000_reconciles']} CPU-s per 1,000 reconciles, "
                  f"{figures['api_requests_per_reconcile']} API requests per reconcile")
        print("(c) our API requests per new object (those KubeRay reported on): " + ", ".join(
            f"{what} {n}" for what, n in summary["c_our_requests_per_new_object"].items()))
        ratio = burst["ours"]["cpu_s_per_1000_reconciles"] / burst["kuberay"]["cpu_s_per_1000_reconciles"]
        print(f"(c) ratio ours/KubeRay, CPU-s per 1,000 reconciles: {ratio:.2f}")
        print(f"(d) {int(idle_writes)} API writes in {args.idle_seconds:.0f}s idle ({int(idle_reconciles)} resync reconciles)")
    finally:
        if operator:
            operator.stop()
        s3.stop()
        cluster.down()


if __name__ == "__main__":
    main()
