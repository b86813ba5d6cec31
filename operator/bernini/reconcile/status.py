"""What the status should say, from what one reconcile saw. Pure."""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from bernini.api.spec import BerniniDeploymentSpec
from bernini.api.status import (
    ArtifactsObservation, BerniniDeploymentStatus, Capacity, Condition, Cost, RayServiceObservation,
    StageObservation, WorkerGroupCapacity,
)
from bernini.artifacts.preflight import Preflight
from bernini.cost.estimate import estimate, reported_workers
from bernini.cost.prices import LIST_PRICES, PriceTable
from bernini.domain.capacity import Plan
from bernini.domain.pipeline import APPLICATION_NAME, DEPLOYMENT_NAMES
from bernini.reconcile import conditions as c
from bernini.reconcile.pod_health import PodTrouble
from bernini.render import names
from bernini.render.capacity import deployments


@dataclass(frozen=True)
class Observation:
    generation: int
    preflight: Preflight
    plan: Plan | None
    blocked: tuple[str, str] | None  # (reason, message) when a verified spec still cannot be applied
    rayservice: dict[str, Any] | None  # as the API server holds it after this reconcile
    serving_version: str | None = None  # model version of the RayService's active cluster, when it was read
    pod_trouble: PodTrouble | None = None  # why a starting cluster's pods fail, when they were looked at


def _rayservice_condition(rayservice: dict[str, Any] | None, condition_type: str) -> dict[str, Any]:
    for condition in (rayservice or {}).get("status", {}).get("conditions", []):
        if condition.get("type") == condition_type:
            return condition
    return {}


def judgements(spec: BerniniDeploymentSpec, seen: Observation) -> list[c.Judgement]:
    preflight = seen.preflight
    verified = c.Judgement(c.ARTIFACTS_VERIFIED, "True" if preflight.ok else "False", preflight.reason, preflight.message)
    running = seen.rayservice is not None
    if not preflight.ok:
        kept = "; the running RayService is left as it was" if running else ""
        rendered = c.Judgement(c.RENDERED, "False", "BlockedByPreflight", f"artifacts not verified{kept}")
    elif seen.blocked:
        kept = "; the running RayService is left as it was" if running else ""
        rendered = c.Judgement(c.RENDERED, "False", seen.blocked[0], seen.blocked[1] + kept)
    else:
        rendered = c.Judgement(c.RENDERED, "True", "Applied", f"RayService matches generation {seen.generation}")

    ready_condition = _rayservice_condition(seen.rayservice, "Ready")
    if not running:
        rayservice = c.Judgement(c.RAYSERVICE_READY, "Unknown", "NotCreated", "the RayService does not exist yet")
    elif ready_condition:
        rayservice = c.Judgement(
            c.RAYSERVICE_READY,
            ready_condition.get("status", "Unknown"),
            ready_condition.get("reason") or "Unspecified",
            ready_condition.get("message", ""),
        )
    else:
        rayservice = c.Judgement(c.RAYSERVICE_READY, "Unknown", "Pending", "KubeRay has not reported on it yet")

    if not running:
        pods = c.Judgement(c.PODS_HEALTHY, "Unknown", "NotCreated", "no RayService, so no pods")
    elif seen.pod_trouble:
        pods = c.Judgement(c.PODS_HEALTHY, "False", seen.pod_trouble.reason, seen.pod_trouble.message)
    else:
        pods = c.Judgement(c.PODS_HEALTHY, "True", "NoFailingPods", "no pod of the RayService's clusters is failing")

    if spec.suspend and verified.status == rendered.status == "True":
        ready = c.Judgement(c.READY, "False", "Suspended", "spec.suspend is true: no Serve replicas, no inf2 workers")
    else:
        failing = next((j for j in (verified, rendered, rayservice) if j.status != "True"), None)
        if failing is None:
            # A failing pending cluster leaves the active one serving: still Ready, and the message says so.
            stuck = f"; the next cluster is not starting: {pods.message}" if pods.status == "False" else ""
            ready = c.Judgement(c.READY, "True", "Serving", f"artifacts verified and the RayService is ready{stuck}")
        elif failing is rayservice and pods.status == "False":
            ready = c.Judgement(c.READY, "False", pods.reason, pods.message)
        elif failing is rayservice:
            ready = c.Judgement(c.READY, "False", "RayServiceNotReady", f"{rayservice.reason}: {rayservice.message}".rstrip(": "))
        else:
            ready = c.Judgement(c.READY, "False", failing.reason, failing.message)
    return [verified, rendered, rayservice, pods, ready]


def starting_clusters(rayservice: dict[str, Any] | None) -> list[str]:
    """The RayClusters whose pods may be failing to start: the pending one, and the active one until the
    RayService is Ready. A Ready RayService with nothing pending needs no look at its pods."""
    status = (rayservice or {}).get("status", {})
    pending = status.get("pendingServiceStatus", {}).get("rayClusterName", "")
    active = status.get("activeServiceStatus", {}).get("rayClusterName", "")
    ready = _rayservice_condition(rayservice, "Ready").get("status") == "True"
    return [name for name in (pending, "" if ready else active) if name]


def switched_cluster(rayservice: dict[str, Any] | None) -> str:
    """The active RayCluster when no other is pending (KubeRay finished switching), else ''."""
    status = (rayservice or {}).get("status", {})
    if status.get("pendingServiceStatus", {}).get("rayClusterName"):
        return ""
    return status.get("activeServiceStatus", {}).get("rayClusterName", "")


def _rayservice_summary(rayservice: dict[str, Any] | None) -> RayServiceObservation:
    ready = _rayservice_condition(rayservice, "Ready")
    status = (rayservice or {}).get("status", {})
    return RayServiceObservation(
        ready=ready.get("status", "Unknown"),
        reason=ready.get("reason", ""),
        upgrade_in_progress=_rayservice_condition(rayservice, "UpgradeInProgress").get("status") == "True",
        active_cluster=status.get("activeServiceStatus", {}).get("rayClusterName", ""),
        pending_cluster=status.get("pendingServiceStatus", {}).get("rayClusterName", ""),
    )


def _capacity(plan: Plan) -> Capacity:
    return Capacity(
        min_accelerators=float(plan.min_accelerators),
        max_accelerators=float(plan.max_accelerators),
        min_workers=plan.min_workers,
        max_workers=plan.max_workers,
        worker_groups=[
            WorkerGroupCapacity(instance_type=g.worker.instance.name, min_replicas=g.min_replicas, max_replicas=g.max_replicas)
            for g in plan.groups
        ],
    )


def _stages(spec: BerniniDeploymentSpec, rayservice: dict[str, Any] | None) -> list[StageObservation]:
    application = (rayservice or {}).get("status", {}).get("activeServiceStatus", {}).get(
        "applicationStatuses", {}).get(APPLICATION_NAME, {})
    reported = application.get("serveDeploymentStatuses", {})
    stages = []
    for stage, replicas in deployments(spec):
        name = DEPLOYMENT_NAMES[stage]
        if name in reported:
            stages.append(StageObservation(name=name, status=reported[name].get("status", ""),
                                           message=reported[name].get("message", "")[:4096],
                                           min_replicas=replicas.min_replicas, max_replicas=replicas.max_replicas))
    return stages


def _cost(spec: BerniniDeploymentSpec, seen: Observation, prices: PriceTable) -> Cost | None:
    if seen.plan is None:
        return None
    if spec.suspend or seen.rayservice is None:
        workers = 0
    else:
        reported = reported_workers(seen.rayservice)
        workers = seen.plan.min_workers if reported is None else reported
    return estimate(seen.plan, workers, prices)


def _kept(model: type[BaseModel], stored: Any):
    """What the status held before, if it still reads as the model (an older operator may have written it)."""
    if not stored:
        return None
    try:
        return model.model_validate(stored)
    except ValidationError:
        return None


def _serialized(status: BerniniDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


def desired_status(
    name: str, namespace: str, spec: BerniniDeploymentSpec, seen: Observation, current: dict[str, Any], now: str,
    prices: PriceTable = LIST_PRICES,
) -> tuple[dict[str, Any], list[c.Transition]]:
    conditions, transitions = c.merge(current.get("conditions", []), judgements(spec, seen), seen.generation, now)
    manifest = seen.preflight.manifest
    if seen.preflight.ok and manifest:
        artifacts = ArtifactsObservation(uri=spec.model.artifacts_uri, target=manifest.target,
                                         compiler_version=manifest.toolchain.neuronx_cc or "",
                                         total_bytes=manifest.total_bytes,
                                         manifest_sha256=seen.preflight.manifest_sha256 or "")
    else:
        artifacts = _kept(ArtifactsObservation, current.get("artifacts"))
    status = BerniniDeploymentStatus(
        observed_generation=seen.generation,
        conditions=[Condition.model_validate(condition) for condition in conditions],
        ray_service_name=name if seen.rayservice else "",
        serve_endpoint=names.serve_endpoint(name, namespace) if seen.rayservice else "",
        # What serves traffic: the active cluster's version once KubeRay switched to it, never the one
        # that is only pending (or blocked).
        model_version=seen.serving_version or current.get("modelVersion", ""),
        ray_service=_rayservice_summary(seen.rayservice),
        capacity=_capacity(seen.plan) if seen.plan else _kept(Capacity, current.get("capacity")),
        artifacts=artifacts,
        stages=_stages(spec, seen.rayservice),
        cost=_cost(spec, seen, prices) or _kept(Cost, current.get("cost")),
    )
    return _serialized(status), transitions


def invalid_status(current: dict[str, Any], seen: Observation, now: str) -> tuple[dict[str, Any], list[c.Transition]]:
    """A spec the model refuses (an older CRD admitted it): say so in Ready, keep what was observed before."""
    judgement = c.Judgement(c.READY, "False", seen.preflight.reason, seen.preflight.message)
    conditions, transitions = c.merge(current.get("conditions", []), [judgement], seen.generation, now)
    kept = _kept(BerniniDeploymentStatus, current) or BerniniDeploymentStatus()
    status = kept.model_copy(update={
        "observed_generation": seen.generation,
        "conditions": [Condition.model_validate(condition) for condition in conditions],
    })
    return _serialized(status), transitions
