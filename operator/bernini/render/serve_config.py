"""serveConfigV2: one application; the layout's Serve deployments (fused or one per stage) plus the ingress."""

import functools
import json
from typing import Any

import yaml

from bernini.api.spec import BerniniDeploymentSpec, ReplicaSpec
from bernini.domain.pipeline import APPLICATION_IMPORT_PATH, APPLICATION_NAME, ARTIFACTS_MOUNT_PATH, DEPLOYMENT_NAMES
from bernini.domain.quantity import to_bytes
from bernini.render.capacity import deployments, on_cpu_group
from bernini.render.pods import GROUP_RESOURCE_ASKED, GROUP_RAY_RESOURCES, NEURON_CORES_RAY_RESOURCE

# A request the pipeline has not answered in this long gets 408 from Serve's proxy instead of holding a slot.
HTTP_OPTIONS = {"host": "0.0.0.0", "port": 8000, "request_timeout_s": 120}

# Serve runs stage code on threads of their own, where glibc's arenas gave freed tensor memory back to the
# kernel and faulted it in again on the next call: 9,300 minor page faults per request in the Diffusion replica,
# 670-1,900 with these thresholds (the mmap one is the largest glibc takes).
REPLICA_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


def _queue_bound(name: str, replica_spec: ReplicaSpec, spec: BerniniDeploymentSpec) -> int:
    """Serve bounds the queue at each caller. The ingress, called by the proxies, is the one place that
    refuses: past one more full round of work at its largest scale, a caller gets 503 at once (Serve's proxy
    answers it, in plain text: answering in JSON would route every refused request to an ingress replica, and
    clients retrying at once then slowed the proxy's own health check past a second). A stage's
    caller is one ingress replica, which has at most its maxOngoingRequests in flight; queueing all of them
    means no request the ingress admitted is refused halfway through the pipeline, after earlier stages did
    its work. (Serve over-counts its queue while requests await assignment, so a stage bounded by its own
    capacity refused 1 request in 64 at 4 concurrent clients during a scale-up.)"""
    if name == "ingress":
        return replica_spec.max_ongoing_requests * replica_spec.max_replicas
    return spec.ingress.max_ongoing_requests


def _deployment(name: str, replica_spec: ReplicaSpec, spec: BerniniDeploymentSpec) -> dict[str, Any]:
    actor_options: dict[str, Any] = {"num_cpus": replica_spec.cpus, "memory": to_bytes(replica_spec.memory)}
    amount = replica_spec.amount(name, spec.accelerator.kind)
    amount = int(amount) if amount == int(amount) else amount
    resources = {}
    if spec.accelerator.kind != "cpu":
        role = "cpu" if on_cpu_group(spec, name, replica_spec) else "accelerated"
        resources[GROUP_RAY_RESOURCES[role]] = GROUP_RESOURCE_ASKED
    if amount and spec.accelerator.kind == "neuron":
        resources[NEURON_CORES_RAY_RESOURCE] = amount
    elif amount:
        actor_options["num_gpus"] = amount
    if resources:
        actor_options["resources"] = resources
    return {
        "name": DEPLOYMENT_NAMES[name],
        "max_ongoing_requests": replica_spec.max_ongoing_requests,
        "max_queued_requests": _queue_bound(name, replica_spec, spec),
        "ray_actor_options": actor_options,
        "autoscaling_config": {
            "min_replicas": replica_spec.min_replicas,
            "initial_replicas": replica_spec.min_replicas,
            "max_replicas": replica_spec.max_replicas,
            "target_ongoing_requests": replica_spec.target_ongoing_requests,
            "upscale_delay_s": spec.autoscaling.upscale_delay_seconds,
            "downscale_delay_s": spec.autoscaling.downscale_delay_seconds,
            "look_back_period_s": spec.autoscaling.look_back_period_seconds,
        },
    }


def serve_config(spec: BerniniDeploymentSpec) -> dict[str, Any]:
    """Suspended: no application at all. Serve cannot hold a deployment at zero replicas with no way up,
    and an absent application answers 404 at once instead of queueing requests no replica will take."""
    if spec.suspend:
        return {"http_options": HTTP_OPTIONS, "applications": []}
    return {
        "http_options": HTTP_OPTIONS,
        "applications": [
            {
                "name": APPLICATION_NAME,
                "route_prefix": "/",
                # Imported from the serving image: KubeRay's REST deploy path refuses a local working_dir.
                "import_path": APPLICATION_IMPORT_PATH,
                "runtime_env": {"env_vars": REPLICA_ENV},
                "args": {
                    "artifacts_dir": ARTIFACTS_MOUNT_PATH,
                    "model_name": spec.model.name,
                    "model_version": spec.model.version,
                    "layout": spec.layout,
                },
                "deployments": [_deployment(name, replica_spec, spec) for name, replica_spec in deployments(spec)],
            }
        ],
    }


def serve_config_yaml(spec: BerniniDeploymentSpec) -> str:
    return _yaml(json.dumps(serve_config(spec)))


@functools.lru_cache(maxsize=256)
def _yaml(config: str) -> str:
    """PyYAML's emitter took 85% of an idle reconcile's CPU (about 10 ms); many deployments share a config."""
    return yaml.safe_dump(json.loads(config), sort_keys=False)
