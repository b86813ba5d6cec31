"""Names and labels every rendered object shares."""

from bernini.domain.instances import CATALOGUE

MANAGER = "bernini-operator"
VERSION_LABEL = "app.kubernetes.io/version"
# On the Ray pods: a change of layout changes the pod templates, so KubeRay rolls it out on a new cluster
# instead of swapping Serve deployments under a running ingress.
LAYOUT_LABEL = "bernini.dev/layout"


def labels(name: str, model_version: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "bernini",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGER,
        "bernini.dev/deployment": name,
    }
    if model_version:
        result[VERSION_LABEL] = model_version
    return result


def serve_endpoint(name: str, namespace: str) -> str:
    # KubeRay names the Serve Service <rayservice>-serve-svc and serves HTTP on 8000.
    return f"http://{name}-serve-svc.{namespace}.svc.cluster.local:8000"


def gateway_name(name: str) -> str:
    # KubeRay names an incremental RayService's Gateway <rayservice>-gateway; it listens for HTTP on port 80.
    return f"{name}-gateway"


def worker_group_name(instance_type: str) -> str:
    return instance_type.replace(".", "-")


_INSTANCE_TYPE_OF_GROUP = {worker_group_name(name): name for name in CATALOGUE}


def instance_type_of_group(group_name: str) -> str | None:
    """The catalogued instance type a worker group of ours runs on, or None for a group that is not ours."""
    return _INSTANCE_TYPE_OF_GROUP.get(group_name)


def model_version_of(raycluster: dict) -> str:
    """The model version a RayCluster's pods carry (its head template's version label)."""
    template = raycluster.get("spec", {}).get("headGroupSpec", {}).get("template", {})
    return template.get("metadata", {}).get("labels", {}).get(VERSION_LABEL, "")
