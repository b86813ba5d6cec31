"""Reading a RayService's pods, Services and Ray dashboard on the real-node cluster."""

import base64
import errno
import http.client
import json
import os
import threading
import time
from collections.abc import Callable
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from bernini.api import GROUP, PLURAL, VERSION
from bernini.api.kuberay import worker_pods
from localdev.waiting import wait_for
from tests.realnodes.conftest import REPO

CHAIR = {"prompt": "a chair with four legs"}
# The worker groups of localdev.sizing's spec, as pod label selectors.
ACCELERATED_GROUP, CPU_GROUP = "inf2-xlarge", "m6i-2xlarge"
ACCELERATED_WORKERS, CPU_WORKERS = f"ray.io/group={ACCELERATED_GROUP}", f"ray.io/group={CPU_GROUP}"


def deployment(custom, namespace: str, name: str = "bernini") -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(body: dict, condition_type: str) -> dict:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == condition_type), {})


def ready(custom, namespace: str, name: str = "bernini") -> dict | None:
    body = deployment(custom, namespace, name)
    return body if condition(body, "Ready").get("status") == "True" else None


def rayservice(custom, namespace: str, name: str = "bernini") -> dict:
    return custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", name)


def cluster_ip(core, namespace: str, service: str) -> str:
    return core.read_namespaced_service(service, namespace).spec.cluster_ip


def post_prompt(address: str, timeout: float = 60) -> int:
    """POST a prompt to a Serve Service's ClusterIP; the HTTP status."""
    return post(f"http://{address}:8000", timeout, "obj")[0]


def generate(core, namespace: str, timeout: float = 180, file_format: str = "glb") -> tuple[int, dict, bytes]:
    """POST a prompt through the RayService's Serve Service (its ClusterIP, through kube-proxy); header names
    come back lower-cased (HTTP header names are case-insensitive, and Serve sends them lower-case)."""
    return post(f"http://{cluster_ip(core, namespace, 'bernini-serve-svc')}:8000", timeout, file_format)


class Load(threading.Thread):
    """Sends requests back to back (`pause` seconds apart) until stopped; records (time, status, model version)
    of each, and what a failed one said. send() returns generate()'s (status, headers, body)."""

    def __init__(self, send: Callable[[], tuple[int, dict, bytes]], pause: float = 0.0):
        super().__init__(daemon=True)
        self.send, self.pause = send, pause
        self.results: list[tuple[float, int, str]] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            version = ""
            try:
                status, headers, body = self.send()
                version = headers.get("x-bernini-model-version", "")
                if status != 200:
                    self.failures.append(f"{status}: {body[:300]!r}")
            except (OSError, http.client.HTTPException) as error:
                status = -1
                self.failures.append(f"{type(error).__name__}: {error}")
            self.results.append((time.monotonic(), status, version))
            self.stopping.wait(self.pause)

    def stop(self) -> list[tuple[float, int, str]]:
        self.stopping.set()
        self.join(180)
        return self.results


class PodPeak(threading.Thread):
    """Samples, twice a second, the accelerator worker pods of every RayCluster in the namespace: those the
    RayClusters ask for (KubeRay's count, from their specs) and those that exist and are not terminating."""

    def __init__(self, core, custom, namespace):
        super().__init__(daemon=True)
        self.core, self.custom, self.namespace = core, custom, namespace
        self.asked = self.existing = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.5):
            clusters = self.custom.list_namespaced_custom_object("ray.io", "v1", self.namespace, "rayclusters")["items"]
            asked = sum(worker_pods(cluster).get(ACCELERATED_GROUP, 0) for cluster in clusters)
            existing = sum(not pod.metadata.deletion_timestamp
                           for pod in pods(self.core, self.namespace, ACCELERATED_WORKERS))
            self.asked, self.existing = max(self.asked, asked), max(self.existing, existing)

    def stop(self) -> tuple[int, int]:
        self.stopping.set()
        self.join(30)
        return self.asked, self.existing


def post(endpoint: str, timeout: float, file_format: str, body: bytes = json.dumps(CHAIR).encode(),
         content_type: str = "application/json") -> tuple[int, dict, bytes]:
    """POST a request (by default a prompt) to a Serve endpoint (scheme, host and port)."""
    request = urllib.request.Request(f"{endpoint}/?format={file_format}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _unanswered(error: BaseException) -> bool:
    # Refused once kube-proxy knows the Service has no endpoints; "no route to host" until then, while its
    # rules still point at a pod address that is gone.
    return isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.EHOSTUNREACH


def answer(core, namespace: str) -> tuple[int, dict, bytes] | None:
    """generate(), or None while nothing answers on the Service."""
    try:
        return generate(core, namespace)
    except urllib.error.URLError as error:
        if _unanswered(error.reason):
            return None
        raise
    except OSError as error:
        if _unanswered(error):
            return None
        raise


def container_log(core, namespace: str, pod: str, container: str) -> str:
    """The container's log as text (the client's preloaded form is the repr of bytes)."""
    response = core.read_namespaced_pod_log(pod, namespace, container=container, _preload_content=False)
    return response.data.decode()


def ray_token(core, namespace: str, raycluster: str) -> str:
    secret = core.read_namespaced_secret(raycluster, namespace)
    return base64.b64decode(secret.data["auth_token"]).decode()


def dashboard(core, namespace: str, raycluster: str, path: str, token: str | None) -> tuple[int, bytes]:
    """The head's dashboard on the head pod's IP (KubeRay's head Service is headless)."""
    head = core.list_namespaced_pod(namespace, label_selector=f"ray.io/cluster={raycluster},ray.io/node-type=head").items[0]
    address = head.status.pod_ip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{address}:8265{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def pods(core, namespace: str, selector: str) -> list:
    return core.list_namespaced_pod(namespace, label_selector=selector).items


def raycluster_names(custom, namespace: str) -> list[str]:
    return [c["metadata"]["name"] for c in custom.list_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayclusters")["items"]]


def patch_version_with_deadline(custom, namespace: str, version: str, artifacts_uri: str, deadline: int) -> None:
    """The deployment's model changed to version, its upgrade given deadline seconds to serve."""
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", {"spec": {
        "model": {"version": version, "artifactsUri": artifacts_uri},
        "upgradeStrategy": {"deadlineSeconds": deadline}}})


def find_key(tree, key: str) -> list:
    """Every value stored under key anywhere in a JSON document (Ray's APIs nest their results)."""
    if isinstance(tree, dict):
        return ([tree[key]] if key in tree else []) + [v for value in tree.values() for v in find_key(value, key)]
    if isinstance(tree, list):
        return [v for item in tree for v in find_key(item, key)]
    return []


def node_cache_objects(namespace: str, directory: str) -> tuple[dict, dict]:
    """examples/artifacts-cache.yaml for namespace: its local PersistentVolume (at directory) and claim."""
    volume, claim = yaml.safe_load_all((REPO / "examples" / "artifacts-cache.yaml").read_text())
    volume["metadata"]["name"] = f"bernini-cache-{namespace}"
    volume["spec"]["local"]["path"] = directory
    volume["spec"]["claimRef"]["namespace"] = claim["metadata"]["namespace"] = namespace
    claim["spec"]["volumeName"] = volume["metadata"]["name"]
    return volume, claim


def apply_node_cache(cluster, namespace: str, directory: Path) -> tuple[str, str]:
    """examples/artifacts-cache.yaml on the local nodes: a local PersistentVolume for the inf2 nodes at
    directory, and its claim in namespace. The kubelets share this machine's filesystem, so every inf2 node
    sees the same directory. Returns (claim, volume) names."""
    os.chown(directory, 1000, 100)  # the Ray pods' uid and gid
    volume, claim = node_cache_objects(namespace, str(directory))
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [volume, claim]}))
    return claim["metadata"]["name"], volume["metadata"]["name"]


def serve_applications(core, namespace: str, raycluster: str) -> dict | None:
    """Serve's own view of its applications, from the REST API on the cluster's head (None until it answers)."""
    status, payload = dashboard(core, namespace, raycluster, "/api/serve/applications/", ray_token(core, namespace, raycluster))
    return json.loads(payload) if status == 200 else None


def serve_replica_running_on(core, namespace: str, pod) -> bool:
    """Is a Ray Serve replica RUNNING on this worker pod (by the Serve API on its cluster's head)?"""
    pod = core.read_namespaced_pod(pod.metadata.name, namespace)
    if not pod.status.pod_ip:
        return False
    applications = serve_applications(core, namespace, pod.metadata.labels["ray.io/cluster"])
    return applications is not None and any(
        replica.get("state") == "RUNNING" and replica.get("node_ip") == pod.status.pod_ip
        for replicas in find_key(applications, "replicas") for replica in replicas)


def workers(core, namespace: str) -> dict[str, tuple[str, int]]:
    """Worker pod name -> (uid, restarts of all its containers)."""
    return {pod.metadata.name: (pod.metadata.uid, sum(s.restart_count for s in pod.status.container_statuses or []))
            for pod in pods(core, namespace, "ray.io/node-type=worker") if not pod.metadata.deletion_timestamp}


def _head_ready(core, namespace: str, old_uid: str) -> bool:
    return any(pod.metadata.uid != old_uid and any(c.type == "Ready" and c.status == "True"
                                                   for c in pod.status.conditions or [])
               for pod in pods(core, namespace, "ray.io/node-type=head"))


def head_loss(core, custom, namespace: str, send: Callable[[], tuple[int, dict, bytes]],
              after_seconds: float = 70) -> dict:
    """Under steady load through send, delete the Ray head pod at once (no grace: a crash, a lost node) and
    measure: requests sent and failed until after_seconds past Serve's recovery on the new head (past the 60 s
    after which a worker without GCS fault tolerance gives up on the lost GCS), the worker pods that
    restarted or were replaced, and seconds until a new head pod is Ready and until Serve on it reports the
    application RUNNING (its controller recovered)."""
    active = deployment(custom, namespace)["status"]["rayService"]["activeCluster"]
    [head] = pods(core, namespace, f"ray.io/node-type=head,ray.io/cluster={active}")
    before = workers(core, namespace)
    load = Load(send)
    load.start()
    time.sleep(5)
    started = time.monotonic()
    core.delete_namespaced_pod(head.metadata.name, namespace, grace_period_seconds=0)
    wait_for(lambda: _head_ready(core, namespace, head.metadata.uid), "a new head pod Ready", timeout=600,
             interval=0.5)
    head_back = time.monotonic() - started
    cluster = head.metadata.labels["ray.io/cluster"]

    def serve_running() -> bool:
        try:
            applications = serve_applications(core, namespace, cluster)
        except (OSError, http.client.HTTPException):  # the new head's dashboard is not up yet
            return False
        apps = (applications or {}).get("applications") or {}
        return bool(apps) and all(app.get("status") == "RUNNING" for app in apps.values())

    wait_for(serve_running, "Serve's application RUNNING on the new head", timeout=600, interval=1)
    serve_back = time.monotonic() - started
    time.sleep(after_seconds)
    results = load.stop()
    after = workers(core, namespace)
    return {"sent": len(results), "failed": len(load.failures), "failures": load.failures[:5],
            "restarted": sorted(name for name, state in before.items() if after.get(name) != state),
            "workers": len(before), "head_back": head_back, "serve_back": serve_back}
