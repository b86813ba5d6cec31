"""metav1.Condition bookkeeping: keep lastTransitionTime unless the status changes."""

from dataclasses import dataclass

ARTIFACTS_VERIFIED = "ArtifactsVerified"
RENDERED = "Rendered"
RAYSERVICE_READY = "RayServiceReady"
PODS_HEALTHY = "PodsHealthy"
READY = "Ready"
ORDER = (ARTIFACTS_VERIFIED, RENDERED, RAYSERVICE_READY, PODS_HEALTHY, READY)


@dataclass(frozen=True)
class Judgement:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class Transition:
    type: str
    before: str | None
    after: Judgement


def merge(current: list[dict], judgements: list[Judgement], generation: int, now: str) -> tuple[list[dict], list[Transition]]:
    """New condition list (in ORDER) and the transitions worth an event (status or reason changed)."""
    by_type = {condition["type"]: condition for condition in current}
    merged, transitions = [], []
    for judgement in sorted(judgements, key=lambda j: ORDER.index(j.type)):
        previous = by_type.get(judgement.type)
        status_changed = previous is None or previous.get("status") != judgement.status
        if status_changed or previous.get("reason") != judgement.reason:
            transitions.append(Transition(judgement.type, previous and previous.get("status"), judgement))
        merged.append(
            {
                "type": judgement.type,
                "status": judgement.status,
                "observedGeneration": generation,
                "lastTransitionTime": now if status_changed else previous["lastTransitionTime"],
                "reason": judgement.reason,
                "message": judgement.message,
            }
        )
    return merged, transitions
