"""Prometheus metrics of the operator."""

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

RECONCILES = Counter("bernini_reconcile_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "bernini_reconcile_duration_seconds", "Reconcile duration.", ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter("bernini_api_writes_total", "Writes the operator sent to the API server.", ["verb", "resource"])
LEADER = Gauge("bernini_leader", "1 while this replica holds the leader Lease (and writes), else 0.")
PREFLIGHT_FAILURES = Counter("bernini_preflight_failures_total", "Failed artifact preflights by reason.", ["reason"])


class DeploymentsByReady:
    """Counts the cached BerniniDeployments by their Ready status at scrape time."""

    def __init__(self, bodies: Callable[[], Iterable[dict[str, Any]]]):
        self._bodies = bodies

    def collect(self):
        tally = Tally(
            next((c["status"] for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), "Unknown")
            for body in list(self._bodies())
        )
        family = GaugeMetricFamily("bernini_deployments", "BerniniDeployments by Ready status.", labels=["ready"])
        for status in ("True", "False", "Unknown"):
            family.add_metric([status], tally[status])
        yield family


def observe_reconcile(result: str, seconds: float) -> None:
    RECONCILES.labels(result).inc()
    RECONCILE_SECONDS.labels(result).observe(seconds)
