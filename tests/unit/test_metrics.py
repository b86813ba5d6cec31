"""The gauges read from the cached objects' status at scrape time: a scrape never fails and reads each status once."""

import json

from prometheus_client import CollectorRegistry, generate_latest

from bernini.reconcile import metrics
from bernini.reconcile.metrics import FromStatus


def _body(index: int, ready: str = "True") -> str:
    """As the controller caches it: compact JSON."""
    return json.dumps({"metadata": {"namespace": "ml", "name": f"b{index}"}, "status": {
        "conditions": [{"type": "Ready", "status": ready, "reason": "Serving", "lastTransitionTime": "t"}],
        "cost": {"currentDollarsPerHour": 0.76, "minDollarsPerHour": 0.76, "maxDollarsPerHour": 0.76, "workers": 1,
                 "priceSource": "list", "pricesAsOf": "today",
                 "instanceTypes": [{"instanceType": "inf2.xlarge", "workers": 1, "dollarsPerHour": 0.76}]}}})


def _scrape(collector: FromStatus) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_a_scrape_while_the_controller_adds_objects_does_not_fail(monkeypatch):
    cached = {index: _body(index) for index in range(3)}
    read_back = metrics.read_back

    def reading_while_an_object_arrives(stored):
        cached[len(cached)] = _body(len(cached))  # the event loop's thread, mid-scrape
        return read_back(stored)
    monkeypatch.setattr(metrics, "read_back", reading_while_an_object_arrives)
    text = _scrape(FromStatus(lambda: cached.values()))
    assert 'bernini_deployments{ready="True"} 3.0' in text
    assert 'bernini_cost_dollars_per_hour{instance_type="inf2.xlarge",name="b0",namespace="ml"} 0.76' in text


def test_each_stored_status_is_read_once_until_the_controller_replaces_it(monkeypatch):
    cached = {index: _body(index) for index in range(3)}
    reads = []
    read_back = metrics.read_back
    monkeypatch.setattr(metrics, "read_back", lambda stored: reads.append(stored) or read_back(stored))
    collector = FromStatus(lambda: cached.values())
    _scrape(collector)
    assert len(reads) == 3
    cached[1] = _body(1, ready="False")  # a watch event: a new body, a new status
    text = _scrape(collector)
    assert len(reads) == 4 and 'bernini_deployments{ready="False"} 1.0' in text
