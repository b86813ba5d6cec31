"""Prometheus metrics of the operator."""

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from bernini.api.reasons import READY
from bernini.api.status import BerniniDeploymentStatus, read_back

RECONCILES = Counter("bernini_reconcile_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "bernini_reconcile_duration_seconds", "Reconcile duration.", ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter("bernini_api_writes_total", "Writes the operator sent to the API server.", ["verb", "resource"])
LEADER = Gauge("bernini_leader", "1 while this replica holds the leader Lease (and writes), else 0.")
PREFLIGHT_FAILURES = Counter("bernini_preflight_failures_total", "Failed artifact preflights by reason.", ["reason"])


def _ready(status: BerniniDeploymentStatus) -> str:
    return next((c.status for c in status.conditions if c.type == READY), "Unknown")


@dataclass(frozen=True)
class _Figures:
    """What the gauges show of one status: kept instead of the typed status, a hundred times its size."""
    ready: str
    cost: tuple[tuple[str, float], ...]  # (instance type, $/hour)

    @classmethod
    def of(cls, stored: Any) -> "_Figures":
        status = read_back(stored)
        entries = status.cost.instance_types if status.cost else []
        return cls(_ready(status), tuple((entry.instance_type, entry.dollars_per_hour) for entry in entries))


class FromStatus:
    """Gauges read from the cached BerniniDeployments' status at scrape time: how many are Ready, whether each
    one is, and what each one's workers cost by the hour (status.cost, by instance type)."""

    def __init__(self, bodies: Callable[[], Iterable[dict[str, Any]]]):
        self._bodies = bodies
        self._read: dict[int, tuple[Any, _Figures]] = {}  # id(stored status) -> (it, its figures)

    def _figures(self, stored: Any) -> _Figures:
        """Each stored status is read once: the controller replaces the dict on every change, never edits it."""
        known = self._read.get(id(stored))
        if known is None or known[0] is not stored:
            known = (stored, _Figures.of(stored))
        return known[1]

    def collect(self):
        listed = list(self._bodies())  # one step: the controller's threads add and drop objects meanwhile
        bodies = [(body["metadata"], body.get("status")) for body in listed]
        read = {id(stored): (stored, self._figures(stored)) for _, stored in bodies}
        self._read = read  # what is gone is dropped with its reference
        bodies = [(metadata, read[id(stored)][1]) for metadata, stored in bodies]
        tally = Tally(figures.ready for _, figures in bodies)
        ready = GaugeMetricFamily("bernini_deployments", "BerniniDeployments by Ready status.", labels=["ready"])
        for status in ("True", "False", "Unknown"):
            ready.add_metric([status], tally[status])
        yield ready
        each = GaugeMetricFamily("bernini_deployment_ready", "1 while a BerniniDeployment is Ready, else 0.",
                                 labels=["namespace", "name"])
        for metadata, figures in bodies:
            each.add_metric([metadata["namespace"], metadata["name"]], figures.ready == "True")
        yield each
        cost = GaugeMetricFamily("bernini_cost_dollars_per_hour",
                                 "What a BerniniDeployment's worker nodes cost now, $/hour (status.cost).",
                                 labels=["namespace", "name", "instance_type"])
        for metadata, figures in bodies:
            for instance_type, dollars in figures.cost:
                cost.add_metric([metadata["namespace"], metadata["name"], instance_type], dollars)
        yield cost


def observe_reconcile(result: str, seconds: float) -> None:
    RECONCILES.labels(result).inc()
    RECONCILE_SECONDS.labels(result).observe(seconds)
