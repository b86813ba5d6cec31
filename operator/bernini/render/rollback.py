"""Giving back an upgrade that cannot succeed. Pure.

KubeRay keeps a new cluster that never becomes ready, and its accelerators, until someone reverts by hand: and a
revert of a NewCluster upgrade is one more new cluster (KubeRay compares the goal with the pending cluster only).
So the operator records the RayService spec the serving cluster runs (status.servingRayServiceSpec) whenever
KubeRay has settled on it, and past an upgrade's deadline goes back to exactly that spec:

- Incremental: the recorded spec is applied with the strategy in flight; KubeRay's own rollback moves traffic
  and capacity back and removes the new cluster.
- NewCluster: the recorded spec is applied with upgradeStrategy None, so KubeRay prepares nothing new, and the
  operator clears the RayService's pendingServiceStatus (guarded by the pending cluster's name). KubeRay then
  sees the goal equal to the active cluster and deletes the pending one after its deletion delay. Only once
  KubeRay has settled on that (no upgrade in progress) does the strategy come back.

The spec is kept as the API server returned it: KubeRay compares a hash of it with the one it stamped on the
serving cluster, and a re-render by a newer operator could differ. Whoever may write our status could write
the record, so before it is applied it must match what already runs: its rayClusterConfig the serving
RayCluster's spec (outside the fields KubeRay's hash leaves out), and its Serve config our application only."""

import base64
import datetime
import json
import zlib
from typing import Any

import yaml

from bernini.api.kuberay import RayServiceStatus
from bernini.api.reasons import Cause
from bernini.domain.pipeline import APPLICATION_IMPORT_PATH, ARTIFACTS_MOUNT_PATH
from bernini.domain.quantity import parse_quantity
from bernini.render.serve_config import REPLICA_ENV

NO_NEW_CLUSTER = "None"  # KubeRay's upgradeStrategy type that prepares no new cluster
MAX_RECORD_CHARS = 128 << 10  # a rendered spec compresses to a few KiB; anything far larger was not ours


def encode(rayservice_spec: dict[str, Any]) -> str:
    """The spec as the status carries it: canonical JSON, zlib, base64 (a few KiB)."""
    raw = json.dumps(rayservice_spec, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(raw, 9)).decode()


def decode(record: str) -> dict[str, Any] | None:
    """The recorded spec, or None when there is none or it does not read (status is writable by its RBAC)."""
    if not record or len(record) > MAX_RECORD_CHARS:
        return None
    try:
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(base64.b64decode(record, validate=True), 4 * MAX_RECORD_CHARS)
        spec = json.loads(raw) if not decompressor.unconsumed_tail else None
    except (ValueError, zlib.error, RecursionError):
        return None
    return spec if isinstance(spec, dict) and isinstance(spec.get("rayClusterConfig"), dict) else None


def _status(rayservice: dict[str, Any]) -> dict[str, Any]:
    status = rayservice.get("status")
    return status if isinstance(status, dict) else {}


def strategy_type(rayservice: dict[str, Any] | None) -> str:
    strategy = ((rayservice or {}).get("spec") or {}).get("upgradeStrategy")
    return strategy.get("type", "") if isinstance(strategy, dict) else ""


def settled(rayservice: dict[str, Any] | None) -> bool:
    """KubeRay has acted on the RayService's current spec, prepares no other cluster and has no upgrade in
    progress. Under a strategy that rolls, its active cluster then runs that spec (KubeRay sets the pending
    cluster's name in the same status write as observedGeneration); under None a changed spec runs nowhere."""
    if rayservice is None:
        return False
    status = _status(rayservice)
    sides = [status.get(side) if isinstance(status.get(side), dict) else {}
             for side in ("activeServiceStatus", "pendingServiceStatus")]
    conditions = status.get("conditions") if isinstance(status.get("conditions"), list) else []
    upgrading = any(isinstance(c, dict) and c.get("type") == "UpgradeInProgress" and c.get("status") == "True"
                    for c in conditions)
    return (status.get("observedGeneration") == rayservice["metadata"].get("generation")
            and bool(sides[0].get("rayClusterName")) and not sides[1].get("rayClusterName") and not upgrading)


RECORDED_FIELDS = ("rayClusterConfig", "serveConfigV2")  # what the hash and the running Serve config hold


def rollback_rayservice(metadata: dict[str, Any], recorded: dict[str, Any], live: dict[str, Any],
                        strategy: dict[str, Any]) -> dict[str, Any]:
    """The RayService that gives an upgrade back: our metadata, the recorded cluster and Serve config (the two
    fields checked against what runs), the live spec's other fields, the given strategy."""
    spec = {**json.loads(json.dumps(live)), **{field: json.loads(json.dumps(recorded[field]))
                                              for field in RECORDED_FIELDS if field in recorded}}
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": metadata,
            "spec": {**spec, "upgradeStrategy": strategy}}


_HASH_FREE_WORKER_FIELDS = ("replicas", "minReplicas", "maxReplicas")
_HASH_FREE_POD_FIELDS = ("tolerations", "schedulingGates")


def _hashed(cluster_spec: dict[str, Any]) -> dict[str, Any]:
    """A RayCluster spec without what KubeRay's hash leaves out (the autoscaler's and our bounds' fields,
    what Kueue-like controllers inject)."""
    spec = json.loads(json.dumps(cluster_spec))
    spec.pop("upgradeStrategy", None)
    for group in [spec.get("headGroupSpec") or {}, *(spec.get("workerGroupSpecs") or [])]:
        if not isinstance(group, dict):
            continue
        if group is not spec.get("headGroupSpec"):
            for field in _HASH_FREE_WORKER_FIELDS:
                group.pop(field, None)
            scale = group.get("scaleStrategy")
            if isinstance(scale, dict):
                scale.pop("workersToDelete", None)
                if not scale:
                    group.pop("scaleStrategy")
        pod = (group.get("template") or {}).get("spec")
        if isinstance(pod, dict):
            for field in _HASH_FREE_POD_FIELDS:
                pod.pop(field, None)
    return spec


def mismatch(recorded: dict[str, Any] | None, raycluster: dict[str, Any] | None) -> str:
    """Why the record may not be applied ("" when it may): it must be what the serving RayCluster runs, and its
    Serve config our application alone; then giving an upgrade back applies nothing that does not run already."""
    if recorded is None:
        return "status holds no readable record of the serving spec"
    if not isinstance(raycluster, dict) or not isinstance(raycluster.get("spec"), dict):
        return "the serving RayCluster could not be read"
    try:
        config = yaml.safe_load(recorded["serveConfigV2"])
    except (yaml.YAMLError, AttributeError, TypeError, KeyError, RecursionError):
        config = None
    applications = config.get("applications") if isinstance(config, dict) else None
    if not (set(config or {}) <= {"http_options", "applications"} and isinstance(applications, list) and applications
            and all(_our_application(a) for a in applications)):
        return "the recorded Serve config is not this operator's application alone"
    try:
        differs = _first_difference(_hashed(recorded["rayClusterConfig"]), _hashed(raycluster["spec"]))
    except (AttributeError, TypeError, RecursionError):
        return "the recorded spec does not read as a RayCluster's"
    return f"the recorded spec differs from the serving RayCluster's at {differs}" if differs else ""


def runs(recorded: dict[str, Any] | None, raycluster: dict[str, Any] | None) -> bool:
    return not mismatch(recorded, raycluster)


def _first_difference(recorded: Any, running: Any, path: str = "") -> str:
    """The first path (JSON-pointer-like) where the two differ, "" when they do not."""
    if isinstance(recorded, dict) and isinstance(running, dict):
        for key in sorted(set(recorded) | set(running)):
            if key not in recorded or key not in running:
                return f"{path}/{key}"
            found = _first_difference(recorded[key], running[key], f"{path}/{key}")
            if found:
                return found
        return ""
    if isinstance(recorded, list) and isinstance(running, list) and len(recorded) == len(running):
        return next((found for i, (a, b) in enumerate(zip(recorded, running))
                     if (found := _first_difference(a, b, f"{path}/{i}"))), "")
    return "" if recorded == running or _same_quantity(recorded, running, path) else path or "/"


def _same_quantity(recorded: Any, running: Any, path: str) -> bool:
    """KubeRay builds the RayCluster from its Go types, which write a quantity in canonical form ("5Gi" for
    "5120Mi", "500m" for "0.5"): the same amount of a resource or a volume's size is the same spec."""
    if not isinstance(recorded, str) or not isinstance(running, str) or not (
            "/resources/" in path or path.endswith("/sizeLimit")):
        return False
    try:
        return parse_quantity(recorded) == parse_quantity(running)
    except (ArithmeticError, ValueError):
        return False


_APPLICATION_FIELDS = {"name", "route_prefix", "import_path", "runtime_env", "args", "deployments"}
_APPLICATION_ARGS = {"artifacts_dir", "model_name", "model_version", "layout"}


def _our_application(application: Any) -> bool:
    """Our import path and artifacts directory; of a runtime_env only our environment variables with our values,
    none in any deployment (no packages, no code, no other files)."""
    if not isinstance(application, dict) or not set(application) <= _APPLICATION_FIELDS \
            or application.get("import_path") != APPLICATION_IMPORT_PATH:
        return False
    runtime_env, args = application.get("runtime_env") or {}, application.get("args") or {}
    variables = runtime_env.get("env_vars") if isinstance(runtime_env, dict) else None
    deployments = application.get("deployments") or []
    return (isinstance(runtime_env, dict) and set(runtime_env) <= {"env_vars"} and isinstance(variables or {}, dict)
            and all(REPLICA_ENV.get(name) == value for name, value in (variables or {}).items())
            and isinstance(args, dict) and set(args) <= _APPLICATION_ARGS
            and args.get("artifacts_dir", ARTIFACTS_MOUNT_PATH) == ARTIFACTS_MOUNT_PATH
            and isinstance(deployments, list) and all(
                isinstance(d, dict) and "runtime_env" not in (d.get("ray_actor_options") or {}) for d in deployments))


def parses(timestamp: str | None) -> bool:
    try:
        _time(timestamp or "")
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _time(timestamp: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"no time zone: {timestamp}")
    return parsed


def seconds_left(pending_since: str, deadline_seconds: int, now: str) -> float:
    """Seconds until an upgrade whose cluster appeared at pending_since passes its deadline (negative: past)."""
    return deadline_seconds - (_time(now) - _time(pending_since)).total_seconds()


def serving_share(rayservice: RayServiceStatus) -> bool:
    """Whether the pending cluster serves: an incremental upgrade's has traffic (a NewCluster upgrade's pending
    cluster never does: KubeRay switches to it the moment it is ready)."""
    return bool(rayservice.pending_service_status.traffic_routed_percent)


def why_not_serving(pod_trouble: Cause | None, rayservice: RayServiceStatus) -> str:
    """The failing pods' reason, else what Ray Serve says about the new cluster's applications."""
    if pod_trouble:
        return f"{pod_trouble.reason}: {pod_trouble.message}"
    said = []
    for name, application in sorted(rayservice.pending_service_status.application_statuses.items()):
        if application.status and application.status != "RUNNING":
            said.append(f"Serve application {name} is {application.status}"
                        + (f": {application.message.strip()[:400]}" if application.message.strip() else ""))
    return "; ".join(said) or "its Serve applications never became ready"
