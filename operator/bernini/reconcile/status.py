"""What the status should say, from what one reconcile saw. Pure."""

from dataclasses import dataclass
from typing import Any

from bernini.api import reasons as r
from bernini.api import kuberay
from bernini.api.kuberay import RayServiceStatus
from bernini.api.reasons import Cause
from bernini.api.spec import BerniniDeploymentSpec
from bernini.api.status import (
    AbandonedUpgrade, BerniniDeploymentStatus, Capacity, ArtifactsObservation, Condition, Cost, RayServiceObservation, StageObservation,
    WorkerGroupCapacity,
)
from bernini.artifacts.preflight import Preflight
from bernini.cost.estimate import estimate
from bernini.cost.prices import LIST_PRICES, PriceTable
from bernini.domain.capacity import Plan
from bernini.domain.pipeline import APPLICATION_NAME, DEPLOYMENT_NAMES
from bernini.reconcile import conditions as c
from bernini.render import names
from bernini.render.capacity import deployments
from bernini.render.rollback import parses
from bernini.render.upgrade import incremental


@dataclass(frozen=True)
class Observation:
    generation: int
    preflight: Preflight
    plan: Plan | None
    blocked: Cause | None  # when a verified spec still cannot be applied
    rayservice: RayServiceStatus | None  # as the API server holds it after this reconcile; None: no RayService
    serving_version: str | None = None  # model version of the RayService's active cluster, when it was read
    pod_trouble: Cause | None = None  # why a starting cluster's pods fail, when they were looked at
    # instance type -> worker pods KubeRay wants over the active and pending RayClusters; None while one is unseen.
    workers: dict[str, int] | None = None
    gateway_address: str = ""  # where an incremental RayService's Gateway listens, once its controller says
    baseline_pods: int = 0  # an incremental deployment's baseline (render/upgrade.py); 0 otherwise
    abandoned: AbandonedUpgrade | None = None  # this generation's upgrade, given back at its deadline
    serving_spec: str = ""  # status.servingRayServiceSpec as recorded now (render/rollback.py)


def judgements(spec: BerniniDeploymentSpec, seen: Observation) -> list[c.Judgement]:
    preflight = seen.preflight
    verified = c.Judgement(r.ARTIFACTS_VERIFIED, "True" if preflight.ok else "False", preflight.cause)
    running = seen.rayservice is not None
    kept = "; the running RayService is left as it was" if running else ""
    if seen.abandoned:
        rendered = c.Judgement(r.RENDERED, "False", _given_back(spec, seen.abandoned))
    elif not preflight.ok:
        rendered = c.Judgement(r.RENDERED, "False", Cause(r.BLOCKED_BY_PREFLIGHT, f"artifacts not verified{kept}"))
    elif seen.blocked:
        rendered = c.Judgement(r.RENDERED, "False", Cause(seen.blocked.reason, seen.blocked.message + kept))
    else:
        unused = spec.unused_stage_settings()
        note = f"; {', '.join(unused)}: set, but the {spec.layout} layout does not run them" if unused else ""
        rendered = c.Judgement(r.RENDERED, "True",
                               Cause(r.APPLIED, f"RayService matches generation {seen.generation}{note}"))

    ready_condition = seen.rayservice and seen.rayservice.condition(kuberay.READY)
    if not running:
        rayservice = c.Judgement(r.RAYSERVICE_READY, "Unknown", Cause(r.NOT_CREATED, "the RayService does not exist yet"))
    elif ready_condition:
        # KubeRay's own reason, mirrored as it is.
        rayservice = c.Judgement(r.RAYSERVICE_READY, ready_condition.status,
                                 Cause(ready_condition.reason or r.UNSPECIFIED, ready_condition.message))
    else:
        rayservice = c.Judgement(r.RAYSERVICE_READY, "Unknown", Cause(r.PENDING, "KubeRay has not reported on it yet"))

    if not running:
        pods = c.Judgement(r.PODS_HEALTHY, "Unknown", Cause(r.NOT_CREATED, "no RayService, so no pods"))
    elif seen.pod_trouble:
        pods = c.Judgement(r.PODS_HEALTHY, "False", seen.pod_trouble)
    else:
        pods = c.Judgement(r.PODS_HEALTHY, "True", Cause(r.NO_FAILING_PODS, "no pod of the RayService's clusters is failing"))

    if spec.suspend and verified.status == rendered.status == "True":
        ready = c.Judgement(r.READY, "False", Cause(r.SUSPENDED, r.SUSPENDED.meaning))
    else:
        failing = next((j for j in (verified, rendered, rayservice) if j.status != "True"), None)
        if failing is None:
            # A failing pending cluster leaves the active one serving: still Ready, and the message says so.
            stuck = f"; the next cluster is not starting: {pods.cause.message}" if pods.status == "False" else ""
            ready = c.Judgement(r.READY, "True", Cause(r.SERVING, f"artifacts verified and the RayService is ready{stuck}"))
        elif failing is rayservice and pods.status == "False":
            ready = c.Judgement(r.READY, "False", pods.cause)
        elif failing is rayservice:
            said = f"{rayservice.cause.reason}: {rayservice.cause.message}".rstrip(": ")
            ready = c.Judgement(r.READY, "False", Cause(r.RAYSERVICE_NOT_READY, said))
        else:
            ready = c.Judgement(r.READY, "False", failing.cause)
    return [verified, rendered, rayservice, pods, ready]


def _given_back(spec: BerniniDeploymentSpec, abandoned: AbandonedUpgrade) -> Cause:
    return Cause(r.UPGRADE_ABANDONED,
                 f"version {abandoned.model_version} did not serve within {spec.upgrade_strategy.deadline_seconds}s "
                 f"of its cluster's start and was given back at {abandoned.at}: {abandoned.message}; the RayService "
                 "runs the version in status.modelVersion; change the spec to try again")


def _rayservice_summary(rayservice: RayServiceStatus | None, baseline_pods: int, current: RayServiceObservation,
                        now: str) -> RayServiceObservation:
    if rayservice is None:
        return RayServiceObservation()
    pending = rayservice.pending_service_status.ray_cluster_name
    # The deadline runs from the first sight of this pending cluster, kept over restarts.
    kept = current.pending_since if pending == current.pending_cluster and parses(current.pending_since) else None
    since = (kept or now) if pending else None
    ready, upgrading = rayservice.condition(kuberay.READY), rayservice.condition(kuberay.UPGRADE_IN_PROGRESS)
    return RayServiceObservation(
        ready=ready.status if ready and ready.status in ("True", "False") else "Unknown",
        reason=ready.reason if ready else "",
        upgrade_in_progress=upgrading is not None and upgrading.status == "True",
        active_cluster=rayservice.active_service_status.ray_cluster_name,
        pending_cluster=pending,
        pending_capacity_percent=rayservice.pending_service_status.target_capacity,
        pending_traffic_percent=rayservice.pending_service_status.traffic_routed_percent,
        pending_since=since,
        upgrade_baseline_pods=baseline_pods if pending and baseline_pods else None,
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


def _stages(spec: BerniniDeploymentSpec, rayservice: RayServiceStatus | None) -> list[StageObservation]:
    application = rayservice and rayservice.active_service_status.application_statuses.get(APPLICATION_NAME)
    reported = application.serve_deployment_statuses if application else {}
    stages = []
    for stage, replicas in deployments(spec):
        name = DEPLOYMENT_NAMES[stage]
        if name in reported:
            stages.append(StageObservation(name=name, status=reported[name].status, message=reported[name].message[:4096],
                                           min_replicas=replicas.min_replicas, max_replicas=replicas.max_replicas))
    return stages


def _cost(spec: BerniniDeploymentSpec, seen: Observation, previous: Cost | None, prices: PriceTable) -> Cost | None:
    if seen.plan is None:
        return None
    if spec.suspend or seen.rayservice is None:
        running = {}
    elif seen.workers is not None:
        running = seen.workers
    elif previous is not None:  # a cluster not seen yet (the watch's first list after a restart): as counted last
        running = {entry.instance_type: entry.workers for entry in previous.instance_types}
    else:  # KubeRay makes each group's minimum first
        running = {g.worker.instance.name: g.min_replicas for g in seen.plan.groups}
    return estimate(seen.plan, running, prices)


def _serialized(status: BerniniDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", exclude_none=True)


def desired_status(
    name: str, namespace: str, spec: BerniniDeploymentSpec, seen: Observation, current: BerniniDeploymentStatus,
    now: str, prices: PriceTable = LIST_PRICES,
) -> tuple[dict[str, Any], list[c.Transition]]:
    """current: the status as read back (api.status.read_back). What was observed before is kept where this
    reconcile did not observe it again (a blocked spec keeps its last capacity, artifacts and cost)."""
    conditions, transitions = c.merge(current.conditions, judgements(spec, seen), seen.generation, now)
    manifest = seen.preflight.manifest
    if seen.preflight.ok and manifest:
        artifacts = ArtifactsObservation(uri=spec.model.artifacts_uri, target=manifest.target,
                                         compiler_version=manifest.toolchain.neuronx_cc or "",
                                         total_bytes=manifest.total_bytes,
                                         manifest_sha256=seen.preflight.manifest_sha256 or "")
    else:
        artifacts = current.artifacts
    status = BerniniDeploymentStatus(
        observed_generation=seen.generation,
        conditions=conditions,
        ray_service_name=name if seen.rayservice else "",
        serve_endpoint=_endpoint(name, namespace, spec, seen),
        # What serves traffic: the active cluster's version once KubeRay switched to it, never the one
        # that is only pending (or blocked).
        model_version=seen.serving_version or current.model_version,
        ray_service=_rayservice_summary(seen.rayservice, seen.baseline_pods, current.ray_service, now),
        capacity=_capacity(seen.plan) if seen.plan else current.capacity,
        artifacts=artifacts,
        stages=_stages(spec, seen.rayservice),
        cost=_cost(spec, seen, current.cost, prices) or current.cost,
        abandoned_upgrade=seen.abandoned,
        serving_ray_service_spec=seen.serving_spec,
    )
    return _serialized(status), transitions


def _endpoint(name: str, namespace: str, spec: BerniniDeploymentSpec, seen: Observation) -> str:
    if not seen.rayservice:
        return ""
    if incremental(spec):  # KubeRay makes no <name>-serve-svc in this mode
        address = seen.gateway_address
        return f"http://[{address}]" if ":" in address else f"http://{address}" if address else ""
    return names.serve_endpoint(name, namespace)


def invalid_status(current: BerniniDeploymentStatus, seen: Observation, now: str,
                   ) -> tuple[dict[str, Any], list[c.Transition]]:
    """A spec the model refuses (an older CRD admitted it): say so in Ready, keep what was observed before."""
    judgement = c.Judgement(r.READY, "False", seen.preflight.cause)
    conditions, transitions = c.merge(current.conditions, [judgement], seen.generation, now)
    status = current.model_copy(update={"observed_generation": seen.generation, "conditions": conditions})
    return _serialized(status), transitions
