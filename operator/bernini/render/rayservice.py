"""BerniniDeployment (+ the manifest its preflight verified) -> the desired KubeRay RayService."""

import json
from typing import Any

from bernini.api import GROUP, KIND, VERSION
from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.manifest import Manifest
from bernini.domain.capacity import Plan, WorkerShape, object_store_bytes
from bernini.render import names
from bernini.render.capacity import plan
from bernini.render.pods import (
    CONTAINER_SECURITY, GROUP_RAY_RESOURCES, GROUP_RESOURCE_OFFERED, NEURON_CORES_RAY_RESOURCE, cpu_worker_template,
    head_template, worker_template,
)
from bernini.render.serve_config import serve_config_yaml
from bernini.render.upgrade import Budget, budget, incremental, new_cluster_bounds, upgrade_strategy


# The head's autoscaler sidecar polls the cluster every few seconds: KubeRay's default request of 500m held a
# third of the head's node idle on the local nodes, and kept a second cluster's CPU worker off it during an
# upgrade. It may still burst to KubeRay's 500m.
AUTOSCALER_RESOURCES = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _ray_start_params(kind: str, worker: WorkerShape) -> dict[str, str]:
    # Memory in bytes, as the packing counted it: left to Ray, the replicas' share would be what happens to be
    # free at start, less the object store.
    params = {"num-cpus": str(worker.cpus), "memory": str(worker.replica_memory_bytes),
              "object-store-memory": str(object_store_bytes(worker.memory_bytes))}
    resources = {}
    if kind != "cpu":
        resources[GROUP_RAY_RESOURCES[group_role(worker)]] = GROUP_RESOURCE_OFFERED
    if kind == "neuron" and worker.accelerators:
        resources[NEURON_CORES_RAY_RESOURCE] = worker.accelerators
    elif kind == "nvidia" and worker.accelerators:
        params["num-gpus"] = str(worker.accelerators)
    if resources:
        # The Ray autoscaler reads custom resources only from here, not from container limits.
        params["resources"] = f"'{json.dumps(resources)}'"
    return params


def group_role(worker: WorkerShape) -> str:
    return "cpu" if worker.instance.kind == "cpu" else "accelerated"


def _worker_groups(
    spec: BerniniDeploymentSpec, capacity: Plan, labels: dict[str, str], manifest: Manifest, manifest_sha256: str,
    chosen_budget: Budget | None,
) -> list[dict[str, Any]]:
    groups = []
    bounds = new_cluster_bounds(spec, capacity, chosen_budget)
    for group in capacity.groups:
        worker = group.worker
        name = names.worker_group_name(worker.instance.name)
        low, high = (0, 0) if spec.suspend else bounds[name]
        groups.append(
            {
                "groupName": name,
                "replicas": low,
                "minReplicas": low,
                "maxReplicas": high,
                "rayStartParams": _ray_start_params(spec.accelerator.kind, worker),
                "template": (cpu_worker_template(spec, labels, worker)
                             if spec.accelerator.kind != "cpu" and group_role(worker) == "cpu"
                             else worker_template(spec, labels, worker, manifest, manifest_sha256)),
            }
        )
    return groups


def rayservice_metadata(name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": names.labels(name),
            "ownerReferences": [owner_reference(name, uid)]}


def render_rayservice(
    name: str,
    namespace: str,
    uid: str,
    spec: BerniniDeploymentSpec,
    manifest: Manifest,
    manifest_sha256: str,
    capacity: Plan | None = None,
    upgrade_budget: Budget | None = None,
) -> dict[str, Any]:
    """The full desired RayService; raises a capacity.DoesNotFit when a stage or worker fits no allowed type.
    Callers that already planned the capacity, or an incremental deployment's budget (render/upgrade.py), pass
    them in."""
    capacity = capacity or plan(spec)
    chosen_budget = upgrade_budget or (budget(spec, capacity) if incremental(spec) else None)
    pod_labels = {**names.labels(name, spec.model.version), names.LAYOUT_LABEL: spec.layout}
    rayservice = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": rayservice_metadata(name, namespace, uid),
        "spec": {
            "upgradeStrategy": upgrade_strategy(spec, chosen_budget),
            "serveConfigV2": serve_config_yaml(spec),
            "rayClusterConfig": {
                "rayVersion": spec.runtime.ray_version,
                # KubeRay carries only this, not changed worker bounds, into the running RayCluster: it
                # deletes every Ray pod and recreates them on resume (the objects stay).
                "suspend": spec.suspend,
                # Without a token anyone who reaches the dashboard could submit jobs, i.e. run code.
                "authOptions": {"mode": "token"},
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "idleTimeoutSeconds": spec.autoscaling.idle_timeout_seconds,
                    "upscalingMode": spec.autoscaling.upscaling_mode,
                    "securityContext": CONTAINER_SECURITY,
                    "resources": AUTOSCALER_RESOURCES,
                },
                "headGroupSpec": {
                    # num-cpus 0 keeps Serve replicas off the head.
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": head_template(spec, pod_labels),
                },
                "workerGroupSpecs": _worker_groups(spec, capacity, pod_labels, manifest, manifest_sha256, chosen_budget),
            },
        },
    }
    fault_tolerance = spec.gcs_fault_tolerance
    if fault_tolerance:
        secret = fault_tolerance.password_secret
        rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"] = {
            "redisAddress": fault_tolerance.redis_address,
            "redisPassword": {"valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}}
        # The head's proxy would be the one path through the head: the workers' proxies take every request.
        rayservice["spec"]["excludeHeadPodFromServeSvc"] = True
    # The builders share constant sub-dicts; callers get their own. A JSON round trip copies it in a fifth of
    # deepcopy's time, and the object is JSON already.
    return json.loads(json.dumps(rayservice))
