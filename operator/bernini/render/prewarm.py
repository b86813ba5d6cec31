"""The pre-warm DaemonSet: while a new version rolls out, one pod per node the workers may use pulls that
version into the node's artifact cache, so the new cluster's workers, and those Ray's autoscaler adds later on
nodes the old cluster held, copy verified files instead of downloading them."""

from typing import Any

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.manifest import Manifest
from bernini.domain.pipeline import ARTIFACTS_MOUNT_PATH
from bernini.render import names
from bernini.render.pods import CONTAINER_SECURITY, accelerator_tolerations, artifacts_volumes, pod_spec, puller_container
from bernini.render.rayservice import owner_reference

COMPONENT = "prewarm"


def prewarm_name(name: str) -> str:
    return f"{name}-{COMPONENT}"


def prewarm_daemonset(name: str, namespace: str, uid: str, spec: BerniniDeploymentSpec,
                      manifest: Manifest, manifest_sha256: str) -> dict[str, Any]:
    """spec.artifactsCache must be set. The puller is the workers' own (same image, manifest pin and cache);
    its copy in the pod's volume is deleted once the cache holds the files, and the pod then idles."""
    labels = {**names.labels(name, spec.model.version), "app.kubernetes.io/component": COMPONENT}
    selector = {key: labels[key] for key in ("bernini.dev/deployment", "app.kubernetes.io/component")}
    # Off the serving path: a share of the node's spare CPU, more when it is idle.
    puller = puller_container(spec, manifest_sha256, {"cpu": "250m", "memory": "1Gi"}, limits={"memory": "1Gi"})
    allowed_types = {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                           "values": list(spec.accelerator.allowed_types)}]}
    pod = pod_spec(
        spec, [_idle_container(spec)], artifacts_volumes(spec, manifest),
        automountServiceAccountToken=False, terminationGracePeriodSeconds=1, initContainers=[puller],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [allowed_types]}}},
        **accelerator_tolerations(spec),
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": prewarm_name(name), "namespace": namespace, "labels": labels,
                     "ownerReferences": [owner_reference(name, uid)]},
        "spec": {
            "selector": {"matchLabels": selector},
            # A newer version applied mid-rollout replaces every node's pod at once, not one node at a time.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _idle_container(spec: BerniniDeploymentSpec) -> dict[str, Any]:
    """Frees the pod's own copy of the artifacts (the cache keeps its own) and idles."""
    return {
        "name": "idle",
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": ["sh", "-c", f"find {ARTIFACTS_MOUNT_PATH} -mindepth 1 -delete && exec sleep infinity"],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "artifacts", "mountPath": ARTIFACTS_MOUNT_PATH}],
    }
