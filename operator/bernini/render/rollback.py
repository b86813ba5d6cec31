"""Giving back an upgrade that cannot succeed. Pure.

KubeRay keeps a new cluster that never becomes ready, and its accelerators, until someone reverts by hand: and a
revert of a NewCluster upgrade is one more new cluster (KubeRay compares the goal with the pending cluster only).
So the operator records the RayService spec the serving cluster runs (status.servingRayServiceSpec) whenever
KubeRay has settled on it, and past an upgrade's deadline goes back to exactly that spec:

- Incremental: the recorded spec is applied as it is; KubeRay's own rollback moves traffic and capacity back
  and removes the new cluster.
- NewCluster: the recorded spec is applied with upgradeStrategy None, so KubeRay prepares nothing new, and the
  operator clears the RayService's pendingServiceStatus (guarded by the pending cluster's name). KubeRay then
  sees the goal equal to the active cluster and deletes the pending one after its deletion delay. Only then does
  the recorded strategy come back.

The spec is kept byte for byte (as the API server returned it): KubeRay compares a hash of it with the one it
stamped on the serving cluster, and a re-render by a newer operator could differ."""

import base64
import datetime
import json
import zlib
from typing import Any

from bernini.api.kuberay import RayServiceStatus
from bernini.api.reasons import Cause

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
    except (ValueError, zlib.error):
        return None
    return spec if isinstance(spec, dict) and isinstance(spec.get("rayClusterConfig"), dict) else None


def settled(rayservice: dict[str, Any] | None) -> bool:
    """KubeRay has acted on the RayService's current spec and prepares no other cluster: its active cluster runs
    that spec (KubeRay sets the pending cluster's name in the same status write as observedGeneration)."""
    if rayservice is None:
        return False
    status = rayservice.get("status") if isinstance(rayservice.get("status"), dict) else {}
    sides = [status.get(side) if isinstance(status.get(side), dict) else {}
             for side in ("activeServiceStatus", "pendingServiceStatus")]
    return (status.get("observedGeneration") == rayservice["metadata"].get("generation")
            and bool(sides[0].get("rayClusterName")) and not sides[1].get("rayClusterName"))


def rollback_rayservice(desired: dict[str, Any], recorded: dict[str, Any], pending: bool) -> dict[str, Any]:
    """The RayService that gives an upgrade back: desired's metadata with the recorded spec; while a NewCluster
    upgrade's cluster is still pending, with a strategy that prepares nothing new."""
    spec = json.loads(json.dumps(recorded))
    strategy = spec.get("upgradeStrategy") or {}
    if pending and strategy.get("type", "NewCluster") == "NewCluster":
        spec["upgradeStrategy"] = {"type": NO_NEW_CLUSTER}
    return {**desired, "spec": spec}


def clears_by_hand(recorded: dict[str, Any]) -> bool:
    """Whether the operator must clear KubeRay's pending cluster itself (NewCluster; see the module's notes)."""
    return (recorded.get("upgradeStrategy") or {}).get("type", "NewCluster") == "NewCluster"


def seconds_left(pending_since: str, deadline_seconds: int, now: str) -> float:
    """Seconds until an upgrade whose cluster appeared at pending_since passes its deadline (negative: past)."""
    started, current = (datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (pending_since, now))
    return deadline_seconds - (current - started).total_seconds()


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
