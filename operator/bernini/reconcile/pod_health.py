"""Why a RayService's pods do not start, read from the pods themselves. Pure."""

from typing import Any

from bernini.api import reasons as r
from bernini.api.reasons import Cause

# Waiting reasons that do not clear on their own; ContainerCreating and PodInitializing do.
STUCK_WAITING = {reason: reason for reason in r.STUCK_WAITING}


def diagnose(pods: list[dict[str, Any]]) -> Cause | None:
    """The first failing pod (by name) and why: a failed init container, a crashing or unstartable
    container, or a Failed phase. Pending for want of a node is not trouble: autoscaling expects it."""
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        trouble = _pod_trouble(pod)
        if trouble:
            return trouble
    return None


def _pod_trouble(pod: dict[str, Any]) -> Cause | None:
    status = pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    where = f"pod {pod['metadata']['name']} ({phase})"
    for kind, failed, statuses in (("init container", r.INIT_CONTAINER_FAILED, status.get("initContainerStatuses")),
                                   ("container", r.CONTAINER_FAILED, status.get("containerStatuses"))):
        for container in statuses or []:
            failure = _container_failure(container, failed)
            if failure:
                reason, detail = failure
                return Cause(reason, f"{where}: {kind} {container['name']} {detail}")
    if phase == "Failed":
        return Cause(r.POD_FAILED, f"{where}: {status.get('reason', '')} {status.get('message', '')}".rstrip())
    return None


def _container_failure(container: dict[str, Any], failed: r.Reason) -> tuple[r.Reason, str] | None:
    """(reason, detail): `failed` for a non-zero exit (now or before a restart), else a stuck waiting reason."""
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    waiting = (state.get("waiting") or {}).get("reason", "")
    restarts = container.get("restartCount", 0)
    if terminated and terminated.get("exitCode", 0) != 0:
        backoff = f", {waiting} after {restarts} restarts" if waiting else ""
        said = _last_line(terminated.get("message", ""))
        return failed, f"exited {terminated['exitCode']} ({terminated.get('reason', 'Error')}{backoff})" + (f": {said}" if said else "")
    if waiting in STUCK_WAITING:
        said = _last_line(state["waiting"].get("message", ""))
        return STUCK_WAITING[waiting], f"is waiting: {waiting}" + (f": {said}" if said else "")
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""
