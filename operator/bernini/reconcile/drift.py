"""Is everything we want already in what the API server holds? Fields others add (defaults, status) are fine."""

from typing import Any


def contains(observed: Any, desired: Any) -> bool:
    if observed == desired:  # most subtrees are equal: one comparison in C instead of a walk in Python
        return True
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            key in observed and contains(observed[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(desired)
            and all(contains(o, d) for o, d in zip(observed, desired))
        )
    return False
