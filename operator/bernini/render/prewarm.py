"""The pre-warm DaemonSet: while a new version rolls out, one pod per node the workers may use pulls that
version into the node's artifact cache, so the new cluster's workers, and those Ray's autoscaler adds later on
nodes the old cluster held, copy verified files instead of downloading them."""

from typing import Any

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.manifest import Manifest
from bernini.instances import KINDS
from bernini.pipeline import ARTIFACTS_MOUNT_PATH
from bernini.render import names
from bernini.render.pods import CACHE_MOUNT_PATH, CONTAINER_SECURITY, POD_SECURITY, artifacts_volume_size, pull_command
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
    mounts = [{"name": "artifacts", "mountPath": ARTIFACTS_MOUNT_PATH},
              {"name": "artifacts-cache", "mountPath": CACHE_MOUNT_PATH}]
    puller = {
        "name": "pull-artifacts",
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": pull_command(spec, manifest_sha256),
        # Off the serving path: a share of the node's spare CPU, more when it is idle.
        "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    idle = {
        "name": "idle",
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": ["sh", "-c", f"find {ARTIFACTS_MOUNT_PATH} -mindepth 1 -delete && exec sleep infinity"],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts[:1],
    }
    kind = KINDS[spec.accelerator.kind]
    pod: dict[str, Any] = {
        "securityContext": POD_SECURITY,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 1,
        "initContainers": [puller],
        "containers": [idle],
        "volumes": [
            {"name": "artifacts", "emptyDir": {"sizeLimit": artifacts_volume_size(manifest)}},
            {"name": "artifacts-cache", "persistentVolumeClaim": {"claimName": spec.artifacts_cache.claim_name}},
        ],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                   "values": list(spec.accelerator.allowed_types)}]}]}}},
    }
    if kind.taint_key:
        pod["tolerations"] = [{"key": kind.taint_key, "operator": "Exists", "effect": "NoSchedule"}]
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
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
