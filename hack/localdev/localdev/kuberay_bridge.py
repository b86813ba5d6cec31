"""Let the real KubeRay operator use a local Ray head as a RayService's head.

KubeRay is restarted in a mount namespace of its own whose /etc/hosts maps the head Service's cluster DNS
name to 127.0.0.1; the Ray head listens on the ports KubeRay dials (dashboard 8265, Serve 8000) with the
token from the Secret KubeRay created. KubeRay then deploys serveConfigV2 through the dashboard and
health-checks Serve on the head pod's IP, which KWOK took from loopback.
"""

import base64
import json
import socket
import tempfile
import time
from pathlib import Path

from localdev.cluster import LocalCluster
from localdev.ray_head import RayHead

DASHBOARD_PORT, SERVE_PORT = 8265, 8000


class BridgeError(RuntimeError):
    pass


def ports_free() -> bool:
    for port in (DASHBOARD_PORT, SERVE_PORT):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def start_head_for(cluster: LocalCluster, namespace: str, rayservice: str, artifacts_dir: Path) -> RayHead:
    if not ports_free():
        raise BridgeError(f"ports {DASHBOARD_PORT} and {SERVE_PORT} must be free for the stand-in Ray head")
    owned = [c for c in json.loads(cluster.kubectl("get", "rayclusters", "-n", namespace, "-o", "json"))["items"]
             if c["metadata"].get("ownerReferences", [{}])[0].get("name") == rayservice]
    if not owned:
        raise BridgeError(f"KubeRay has not created a RayCluster for {namespace}/{rayservice}")
    name = owned[0]["metadata"]["name"]
    secret = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json"))
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    cluster.restart_kuberay_resolving({f"{name}-head-svc.{namespace}.svc.cluster.local": "127.0.0.1"})
    head = RayHead(Path(tempfile.mkdtemp(prefix="bernini-ray-")), cluster.log_dir / "ray-kuberay.log", token=token,
                   dashboard_port=DASHBOARD_PORT, serve_port=SERVE_PORT,
                   extra_env={"BERNINI_LOCAL_ARTIFACTS_DIR": str(artifacts_dir)})
    head.start()
    return head


def wait_serve_running(cluster: LocalCluster, namespace: str, rayservice: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = json.loads(cluster.kubectl("get", "rayservice", rayservice, "-n", namespace, "-o", "json"))
        statuses = body.get("status", {}).get("activeServiceStatus", {}).get("applicationStatuses", {})
        if any(app.get("status") == "RUNNING" for app in statuses.values()):
            return
        time.sleep(2)
    raise BridgeError(f"KubeRay did not get {namespace}/{rayservice}'s application RUNNING within {timeout:.0f}s")


def stand_in_serve_endpoints(cluster: LocalCluster, namespace: str, rayservice: str) -> None:
    """A STAND-IN EndpointSlice for the Serve Service. KubeRay turns a RayService Ready only when that
    Service has ready endpoints, and Kubernetes refuses loopback addresses in EndpointSlices, while every
    fake pod IP here is loopback. The address is from TEST-NET-2 (documentation only); nothing dials it."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "ray.io/node-type=head", "-o", "json"))
    head = pods["items"][0]["metadata"]
    stand_in = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{rayservice}-serve-svc-stand-in",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": f"{rayservice}-serve-svc",
                       "endpointslice.kubernetes.io/managed-by": "bernini-localcluster"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "serve", "port": SERVE_PORT, "protocol": "TCP"}],
        "endpoints": [{
            "addresses": ["198.51.100.10"],
            "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "namespace": namespace, "name": head["name"], "uid": head["uid"]},
        }],
    }
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-localcluster", "-f", "-", input=json.dumps(stand_in))
