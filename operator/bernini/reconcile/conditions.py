"""metav1.Condition bookkeeping: keep lastTransitionTime unless the status changes; which changes are Events."""

from dataclasses import dataclass

from bernini.api import reasons
from bernini.api.reasons import CONDITIONS, RAYSERVICE_READY, Cause
from bernini.api.status import Condition
# The API server refuses a condition message over 32 KiB (and the whole status patch with it); a person
# reads a line or two. Event messages get the same bound.
MESSAGE_LIMIT = 1024


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """message cut to at most limit characters, saying how much was cut."""
    if len(message) <= limit:
        return message
    kept = message[: limit - 40]  # room for the marker, whose count has at most 10 digits
    return f"{kept} [... {len(message) - len(kept)} more characters cut]"


@dataclass(frozen=True)
class Judgement:
    type: str
    status: str  # "True" | "False" | "Unknown"
    cause: Cause


@dataclass(frozen=True)
class Transition:
    type: str
    before: str | None
    after: Judgement


def merge(current: list[Condition], judgements: list[Judgement], generation: int, now: str,
          ) -> tuple[list[Condition], list[Transition]]:
    """New condition list (in CONDITIONS order) and the transitions worth an event (status or reason changed)."""
    by_type = {condition.type: condition for condition in current}
    merged, transitions = [], []
    for judgement in sorted(judgements, key=lambda j: CONDITIONS.index(j.type)):
        previous = by_type.get(judgement.type)
        status_changed = previous is None or previous.status != judgement.status
        if status_changed or previous.reason != judgement.cause.reason:
            transitions.append(Transition(judgement.type, previous and previous.status, judgement))
        merged.append(Condition(
            type=judgement.type,
            status=judgement.status,
            observed_generation=generation,
            last_transition_time=now if status_changed else previous.last_transition_time,
            reason=judgement.cause.reason,
            message=bounded(judgement.cause.message),
        ))
    return merged, transitions


def event_type(transition: Transition) -> str | None:
    """The Event a condition change is worth, if any. Failures always warn, and so does losing True;
    other changes are Normal events only between known states, so a new object's first states and
    waiting states cost no API writes (5,000 new objects would otherwise post some 28,000 Events).
    RayServiceReady mirrors KubeRay, whose own events on the RayService tell it."""
    after, before = transition.after, transition.before
    reason = after.cause.reason
    if transition.type == RAYSERVICE_READY:
        return None
    if after.status == "False" and (reasons.is_failure(reason) or (before == "True" and reason != reasons.SUSPENDED)):
        return "Warning"
    if after.status == "Unknown" or before not in ("True", "False"):
        return None
    return "Normal"
