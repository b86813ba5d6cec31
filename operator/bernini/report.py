"""`bernini status NAME`: one BerniniDeployment as a person reads it. Pure: the CLI fetches, this formats."""

import json
from typing import Any


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip()
            for row in rows]


def _dollars(value: float) -> str:
    return f"${value:,.4f}/h"


def pull_summary(message: str | None) -> dict[str, Any] | None:
    """The byte counts a successful artifact pull left as its termination message (None for anything else)."""
    try:
        summary = json.loads(message or "")
    except ValueError:
        return None
    return summary if isinstance(summary, dict) and "storeBytes" in summary else None


def _pulled(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    return (f"artifacts: {summary['storeBytes'] / 2**20:.1f} MiB from the store, {summary['cacheBytes'] / 2**20:.1f} MiB"
            f" from the node cache, in {summary['seconds']:.1f}s")


def report(body: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    """body: the BerniniDeployment; pods: its Ray pods, of every cluster (name, node, phase, ready, and pulled:
    a worker's pull summary)."""
    metadata, spec, status = body["metadata"], body.get("spec", {}), body.get("status") or {}
    generation, observed = metadata.get("generation", 0), status.get("observedGeneration", 0)
    lines = [f"{metadata['namespace']}/{metadata['name']}: model {spec.get('model', {}).get('version', '?')}"
             f" (serving {status.get('modelVersion') or 'nothing yet'}), generation {generation}"
             f"{'' if observed == generation else f', operator has seen {observed}'}"]
    if status.get("serveEndpoint"):
        lines.append(f"endpoint: {status['serveEndpoint']}")
    lines.append("conditions:")
    lines += _table([[c["type"], c["status"], c["reason"], c.get("message", "")] for c in status.get("conditions", [])])
    lines.append("stages (Ray Serve):")
    lines += _table([[s["name"], s["status"], f"{s['minReplicas']}-{s['maxReplicas']} replicas", s.get("message", "")]
                     for s in status.get("stages", [])])
    lines.append("pods:")
    lines += _table([[p["node"] or "(unscheduled)", p["name"], p["phase"], "ready" if p["ready"] else "not ready",
                      _pulled(p.get("pulled"))] for p in sorted(pods, key=lambda p: (p["node"], p["name"]))])
    artifacts = status.get("artifacts")
    if artifacts:
        lines.append(f"artifacts: {artifacts['uri']} ({artifacts['target']}, {artifacts.get('totalBytes', 0) / 2**20:.1f}"
                     f" MiB), manifest sha256 {artifacts.get('manifestSha256') or 'unknown'}")
    cost = status.get("cost")
    if cost:
        by_type = ", ".join(f"{t['workers']} x {t['instanceType']}" for t in cost.get("instanceTypes", []))
        lines.append(f"cost: {_dollars(cost['currentDollarsPerHour'])} now ({by_type or 'no workers'}); "
                     f"{_dollars(cost['minDollarsPerHour'])} at minimum, {_dollars(cost['maxDollarsPerHour'])} at maximum")
        lines.append(f"prices: {cost['priceSource']}, as of {cost['pricesAsOf']}"
                     + (f"; no price for {', '.join(cost['unpricedInstanceTypes'])}"
                        if cost.get("unpricedInstanceTypes") else ""))
    return "\n".join(lines)
