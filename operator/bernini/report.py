"""`bernini status NAME`: one BerniniDeployment as a person reads it. Pure: the CLI fetches, this formats.

Everything shown comes from objects a tenant can write (the BerniniDeployment, and what KubeRay, Ray Serve and
the pods report into its status), so nothing is trusted: a field of the wrong type shows as "?" or is left out,
never raises, and a character that does not print (ESC, carriage return, bidi override) is shown escaped, so
no object can move the admin's cursor, rewrite a line or set the clipboard."""

import json
import math
from typing import Any

from bernini.api.status import BerniniDeploymentStatus, read_back

# A puller's summary (pull.py): file counts, byte counts and seconds, all of them required.
SUMMARY_KEYS = ("storeFiles", "storeBytes", "cacheFiles", "cacheBytes", "presentFiles", "seconds")
# No pull moves 8 PiB or lasts 285 million years; a figure past 2**53 is not a puller's.
SUMMARY_LIMIT = 2**53


def _shown(value: Any, missing: str = "?") -> str:
    """A value from the objects as text that cannot drive a terminal: a string with each character that does
    not print escaped (ESC as \\x1b, U+202E as \\u202e), plain text unchanged; a number as it is; anything
    else (absent, a list, an object) as `missing`."""
    if isinstance(value, str):
        return value if value.isprintable() else "".join(c if c.isprintable() else _escaped(c) for c in value)
    if isinstance(value, (int, float)):
        return str(value)
    return missing


def _escaped(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _number(value: Any) -> float | None:
    """value as a finite float; None for a string, a bool, NaN, an infinity or an integer past float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _get(value: Any, *path: str) -> Any:
    """value[path[0]][path[1]]...; None where a step is missing or not an object."""
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a list field; anything else in it, or a field that is no list, is left out."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip()
            for row in rows]


def _dollars(value: Any) -> str:
    number = _number(value)
    return "$?/h" if number is None else f"${number:,.4f}/h"


def _mebibytes(value: Any) -> str:
    number = _number(value)
    return "?" if number is None else f"{number / 2**20:.1f}"


def pull_summary(message: str | None) -> dict[str, Any] | None:
    """The byte counts a successful artifact pull left as its termination message (None for anything else)."""
    if not isinstance(message, str):
        return None
    try:
        document = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: brackets nested a thousand deep
        return None
    return _checked_summary(document)


def _checked_summary(document: Any) -> dict[str, Any] | None:
    """document's summary keys when every one of them is a number from 0 to SUMMARY_LIMIT, else None."""
    if not isinstance(document, dict):
        return None
    numbers = [_number(document.get(key)) for key in SUMMARY_KEYS]
    if any(number is None or not 0 <= number <= SUMMARY_LIMIT for number in numbers):
        return None
    return {key: document[key] for key in SUMMARY_KEYS}


def _pulled(summary: Any) -> str:
    summary = _checked_summary(summary)
    if not summary:
        return ""
    return (f"artifacts: {_mebibytes(summary['storeBytes'])} MiB from the store, {_mebibytes(summary['cacheBytes'])}"
            f" MiB from the node cache, in {summary['seconds']:.1f}s")


def _heading(body: Any, status: BerniniDeploymentStatus) -> list[str]:
    generation = _get(body, "metadata", "generation") or 0
    seen = "" if status.observed_generation == generation else f", operator has seen {status.observed_generation}"
    lines = [f"{_shown(_get(body, 'metadata', 'namespace'))}/{_shown(_get(body, 'metadata', 'name'))}:"
             f" model {_shown(_get(body, 'spec', 'model', 'version'))} (serving {_shown(status.model_version or 'nothing yet')}),"
             f" generation {_shown(generation)}{seen}"]
    if status.serve_endpoint:
        lines.append(f"endpoint: {_shown(status.serve_endpoint)}")
    upgrade = status.ray_service
    if upgrade.pending_cluster:
        shares = (f": {upgrade.pending_traffic_percent or 0}% of traffic, {upgrade.pending_capacity_percent or 0}%"
                  " of capacity" if upgrade.pending_capacity_percent is not None else "")
        since = f", since {_shown(upgrade.pending_since)}" if upgrade.pending_since else ""
        lines.append(f"upgrading to cluster {_shown(upgrade.pending_cluster)}{shares}"
                     f" (serving: {_shown(upgrade.active_cluster or 'none')}{since})")
    given_back = status.abandoned_upgrade
    if given_back:
        lines.append(f"upgrade to {_shown(given_back.model_version)} given back at {_shown(given_back.at)}:"
                     f" {_shown(given_back.message)}")
    return lines


def _conditions(status: BerniniDeploymentStatus) -> list[str]:
    rows = [[_shown(c.type), c.status, _shown(c.reason), _shown(c.message)] for c in status.conditions]
    return ["conditions:", *_table(rows)]


def _stages(status: BerniniDeploymentStatus) -> list[str]:
    rows = [[_shown(s.name), _shown(s.status), f"{s.min_replicas}-{s.max_replicas} replicas", _shown(s.message)]
            for s in status.stages]
    return ["stages (Ray Serve):", *_table(rows)]


def _pods(pods: Any) -> list[str]:
    rows = [[_shown(p.get("node") or "(unscheduled)"), _shown(p.get("name")), _shown(p.get("phase")),
             "ready" if p.get("ready") is True else "not ready", _pulled(p.get("pulled"))] for p in _objects(pods)]
    return ["pods:", *_table(sorted(rows, key=lambda row: (row[0], row[1])))]


def _artifacts(status: BerniniDeploymentStatus) -> list[str]:
    artifacts = status.artifacts
    if artifacts is None:
        return []
    return [f"artifacts: {_shown(artifacts.uri)} ({_shown(artifacts.target)}, {_mebibytes(artifacts.total_bytes)} MiB),"
            f" manifest sha256 {_shown(artifacts.manifest_sha256 or 'unknown')}"]


def _cost(status: BerniniDeploymentStatus) -> list[str]:
    cost = status.cost
    if cost is None:
        return []
    by_type = ", ".join(f"{t.workers} x {_shown(t.instance_type)}" for t in cost.instance_types)
    unpriced = ", ".join(map(_shown, cost.unpriced_instance_types))
    return [f"cost: {_dollars(cost.current_dollars_per_hour)} now ({by_type or 'no workers'});"
            f" {_dollars(cost.min_dollars_per_hour)} at minimum,"
            f" {_dollars(cost.max_dollars_per_hour)} at maximum",
            f"prices: {_shown(cost.price_source)}, as of {_shown(cost.prices_as_of)}"
            + (f"; no price for {unpriced}" if unpriced else "")]


def report(body: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """body: the BerniniDeployment; pods: its Ray pods, of every cluster (name, node, phase, ready, and pulled:
    a worker's pull summary). Any JSON-shaped body reads: a status field that does not read as the model is left
    out, anything else not where or what it should be shows as "?"."""
    status = read_back(_get(body, "status"))
    return "\n".join([*_heading(body, status), *_conditions(status), *_stages(status), *_pods(pods),
                      *_artifacts(status), *_cost(status)])
