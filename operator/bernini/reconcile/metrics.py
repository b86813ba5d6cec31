"""Prometheus metrics of the operator."""

import json
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
    """What the gauges show of one BerniniDeployment: kept instead of its typed status, a hundred times the size."""
    namespace: str
    name: str
    ready: str
    cost: tuple[tuple[str, float], ...]  # (instance type, $/hour)

    @classmethod
    def of(cls, raw: str) -> "_Figures":
        body = json.loads(raw)
        status = read_back(body.get("status"))
        entries = status.cost.instance_types if status.cost else []
        return cls(body["metadata"]["namespace"], body["metadata"]["name"], _ready(status),
                   tuple((entry.instance_type, entry.dollars_per_hour) for entry in entries))


class FromStatus:
    """Gauges read from the cached BerniniDeployments (compact JSON) at scrape time: how many are Ready, whether
    each one is, and what each one's workers cost by the hour (status.cost, by instance type)."""

    def __init__(self, cached: Callable[[], Iterable[str]]):
        self._cached = cached
        self._read: dict[int, tuple[str, _Figures]] = {}  # id(cached JSON) -> (it, its figures)

    def _figures(self, raw: str) -> _Figures:
        """Each cached object is read once: the controller replaces its JSON on every change."""
        known = self._read.get(id(raw))
        if known is None or known[0] is not raw:
            known = (raw, _Figures.of(raw))
        return known[1]

    def collect(self):
        listed = list(self._cached())  # one step: the controller's threads add and drop objects meanwhile
        read = {id(raw): (raw, self._figures(raw)) for raw in listed}
        self._read = read  # what is gone is dropped with its reference
        every = [figures for _, figures in read.values()]
        tally = Tally(figures.ready for figures in every)
        ready = GaugeMetricFamily("bernini_deployments", "BerniniDeployments by Ready status.", labels=["ready"])
        for status in ("True", "False", "Unknown"):
            ready.add_metric([status], tally[status])
        yield ready
        each = GaugeMetricFamily("bernini_deployment_ready", "1 while a BerniniDeployment is Ready, else 0.",
                                 labels=["namespace", "name"])
        for figures in every:
            each.add_metric([figures.namespace, figures.name], figures.ready == "True")
        yield each
        cost = GaugeMetricFamily("bernini_cost_dollars_per_hour",
                                 "What a BerniniDeployment's worker nodes cost now, $/hour (status.cost).",
                                 labels=["namespace", "name", "instance_type"])
        for figures in every:
            for instance_type, dollars in figures.cost:
                cost.add_metric([figures.namespace, figures.name, instance_type], dollars)
        yield cost


def observe_reconcile(result: str, seconds: float) -> None:
    RECONCILES.labels(result).inc()
    RECONCILE_SECONDS.labels(result).observe(seconds)
