"""Reading a RayService's pods, Services and Ray dashboard on the real-node cluster."""

import base64
import json
import urllib.error
import urllib.request

from bernini.api import GROUP, PLURAL, VERSION

CHAIR = {"prompt": "a chair with four legs"}


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


def generate(core, namespace: str, timeout: float = 180, file_format: str = "glb") -> tuple[int, dict, bytes]:
    """POST a prompt through the RayService's Serve Service (its ClusterIP, through kube-proxy)."""
    address = cluster_ip(core, namespace, "bernini-serve-svc")
    request = urllib.request.Request(f"http://{address}:8000/?format={file_format}", data=json.dumps(CHAIR).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def ray_token(core, namespace: str, raycluster: str) -> str:
    secret = core.read_namespaced_secret(raycluster, namespace)
    return base64.b64decode(secret.data["auth_token"]).decode()


def dashboard(core, namespace: str, raycluster: str, path: str, token: str | None) -> tuple[int, bytes]:
    address = cluster_ip(core, namespace, f"{raycluster}-head-svc")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{address}:8265{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def pods(core, namespace: str, selector: str) -> list:
    return core.list_namespaced_pod(namespace, label_selector=selector).items
