"""What the status should say, from what one reconcile saw. Pure."""

from dataclasses import dataclass
from typing import Any

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.preflight import Preflight
from bernini.reconcile import conditions as c
from bernini.render import names
from bernini.render.capacity import Plan


@dataclass(frozen=True)
class Observation:
    generation: int
    preflight: Preflight
    plan: Plan | None
    blocked: tuple[str, str] | None  # (reason, message) when a verified spec still cannot be applied
    rayservice: dict[str, Any] | None  # as the API server holds it after this reconcile
    serving_version: str | None = None  # model version of the RayService's active cluster, when it was read


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

    if spec.suspend and verified.status == rendered.status == "True":
        ready = c.Judgement(c.READY, "False", "Suspended", "spec.suspend is true: no Serve replicas, no inf2 workers")
    else:
        failing = next((j for j in (verified, rendered, rayservice) if j.status != "True"), None)
        if failing is None:
            ready = c.Judgement(c.READY, "True", "Serving", "artifacts verified and the RayService is ready")
        elif failing is rayservice:
            ready = c.Judgement(c.READY, "False", "RayServiceNotReady", f"{rayservice.reason}: {rayservice.message}".rstrip(": "))
        else:
            ready = c.Judgement(c.READY, "False", failing.reason, failing.message)
    return [verified, rendered, rayservice, ready]


def switched_cluster(rayservice: dict[str, Any] | None) -> str:
    """The active RayCluster when no other is pending (KubeRay finished switching), else ''."""
    status = (rayservice or {}).get("status", {})
    if status.get("pendingServiceStatus", {}).get("rayClusterName"):
        return ""
    return status.get("activeServiceStatus", {}).get("rayClusterName", "")


def _rayservice_summary(rayservice: dict[str, Any] | None) -> dict[str, Any]:
    ready = _rayservice_condition(rayservice, "Ready")
    status = (rayservice or {}).get("status", {})
    return {
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason", ""),
        "upgradeInProgress": _rayservice_condition(rayservice, "UpgradeInProgress").get("status") == "True",
        "activeCluster": status.get("activeServiceStatus", {}).get("rayClusterName", ""),
        "pendingCluster": status.get("pendingServiceStatus", {}).get("rayClusterName", ""),
    }


def _capacity(plan: Plan) -> dict[str, Any]:
    return {
        "minNeuronCores": plan.min_neuron_cores,
        "maxNeuronCores": plan.max_neuron_cores,
        "minWorkers": plan.min_workers,
        "maxWorkers": plan.max_workers,
        "workerGroups": [
            {"instanceType": g.worker.instance.name, "minReplicas": g.min_replicas, "maxReplicas": g.max_replicas}
            for g in plan.groups
        ],
    }


def desired_status(
    name: str, namespace: str, spec: BerniniDeploymentSpec, seen: Observation, current: dict[str, Any], now: str
) -> tuple[dict[str, Any], list[c.Transition]]:
    conditions, transitions = c.merge(current.get("conditions", []), judgements(spec, seen), seen.generation, now)
    status: dict[str, Any] = {
        "observedGeneration": seen.generation,
        "conditions": conditions,
        "rayServiceName": name if seen.rayservice else "",
        "serveEndpoint": names.serve_endpoint(name, namespace) if seen.rayservice else "",
        # What serves traffic: the active cluster's version once KubeRay switched to it, never the one
        # that is only pending (or blocked).
        "modelVersion": seen.serving_version or current.get("modelVersion", ""),
        "rayService": _rayservice_summary(seen.rayservice),
    }
    if seen.plan:
        status["capacity"] = _capacity(seen.plan)
    elif current.get("capacity"):
        status["capacity"] = current["capacity"]
    manifest = seen.preflight.manifest
    if seen.preflight.ok and manifest:
        status["artifacts"] = {
            "uri": spec.model.artifacts_uri,
            "target": manifest.target,
            "compilerVersion": manifest.toolchain.neuronx_cc or "",
            "totalBytes": manifest.total_bytes,
        }
    elif current.get("artifacts"):
        status["artifacts"] = current["artifacts"]
    return status, transitions
