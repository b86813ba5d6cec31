"""Observability on a real Prometheus: the Prometheus Operator v0.85 and a Prometheus v3.16 it manages (wired as
kube-prometheus-stack wires them, see localdev.monitoring), the operator running from its chart as a pod with
metrics.* switched on. Nothing here invents a series: the PodMonitor scrapes the real Ray pods, the ServiceMonitor
the operator's pod, and the rules and alerts run in that Prometheus on what they export.

The windows are short (rates over 1m, alerts after 30s, 5s scrapes) so that each fault fires and heals in
minutes; the rules are the chart's, only its values differ. The tests run in file order and share one deployment."""

import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from bernini.api import GROUP, PLURAL, VERSION
from bernini.domain.pipeline import DEPLOYMENT_NAMES, deployments_of_layout
from localdev.monitoring import INTERVAL, OPERATOR_NAMESPACE, LocalMonitoring
from localdev.waiting import wait_for
from tests.bench.cost import Sampler, hours_per_million
from tests.delivery.monitoring import dashboard_queries, dashboard_variables, recorded_names
from tests.operator_process import OperatorProcess
from tests.realnodes import helpers
from tests.realnodes.conftest import (VERSIONS, artifacts_uri, publish_with_a_corrupt_stage,
                                      publish_with_a_stage_that_raises, small_spec)

pytestmark = pytest.mark.realnodes

FOR_SECONDS = 30
# A p95 threshold every answer passes: BerniniSlow fires under any load, its fault, until the threshold is raised.
FAST = {"window": "1m", "notReadyFor": f"{FOR_SECONDS}s", "errorsFor": f"{FOR_SECONDS}s", "slowFor": f"{FOR_SECONDS}s",
        "latencyP95Ms": 1}
HEALED_LATENCY_MS = 600000
LOAD_SECONDS, AVERAGED_SECONDS = 150, 60  # the rules' window, then a minute of its evaluations, all under load
NAME = "bernini"


@dataclass
class Monitored:
    monitoring: LocalMonitoring
    namespace: str

    def series(self, expression: str) -> list[dict]:
        """The expression's series for this deployment."""
        return [sample for sample in self.monitoring.query(expression)
                if (sample["metric"].get("namespace"), sample["metric"].get("name")) == (self.namespace, NAME)]

    def evaluations(self, record: str, seconds: float) -> list[float]:
        """The record's values for this deployment at each evaluation of the last `seconds`."""
        end = time.time()
        selector = f'{record}{{namespace="{self.namespace}", name="{NAME}"}}'
        matrix = self.monitoring.api("query_range", query=selector, start=str(end - seconds), end=str(end),
                                     step=INTERVAL)["result"]
        return [float(value) for series in matrix for _, value in series["values"]]

    def alert_state(self, alert: str) -> str:
        """"firing", "pending" or "" (none) for this deployment."""
        states = {a["state"] for a in self.monitoring.alerts(alert)
                  if (a["labels"].get("namespace"), a["labels"].get("name")) == (self.namespace, NAME)}
        return "firing" if "firing" in states else "pending" if states else ""

    def wait_alert(self, alert: str, state: str, why: str, timeout: float = 240) -> float:
        started = time.monotonic()
        wait_for(lambda: self.alert_state(alert) == state, f"{alert} {state or 'gone'} ({why})", timeout=timeout,
                 interval=2, explain=lambda: str(self.monitoring.alerts(alert)))
        return time.monotonic() - started


@pytest.fixture(scope="module")
def monitored(real_cluster, real_core, real_custom, node_s3, serving_namespace, published_versions):
    """No operator process of the tests runs meanwhile: the chart's pod is the operator."""
    with OperatorProcess.paused():
        monitoring = LocalMonitoring(real_cluster)
        try:
            started = time.monotonic()
            monitoring.install()
            monitoring.install_operator_chart(node_s3, **FAST)
            print(f"\nPrometheus Operator, Prometheus and the chart up in {time.monotonic() - started:.0f}s")
            body = small_spec(real_cluster, node_s3)
            real_custom.create_namespaced_custom_object(GROUP, VERSION, serving_namespace, PLURAL, body)
            wait_for(lambda: helpers.ready(real_custom, serving_namespace), "Ready=True", timeout=600, interval=2)
            wait_for(lambda: helpers.answer(real_core, serving_namespace), "a first mesh", timeout=300, interval=2)
            yield Monitored(monitoring, serving_namespace)
            # The deployment goes while its operator runs (its finalizer), then the chart and the stack.
            real_custom.delete_namespaced_custom_object(GROUP, VERSION, serving_namespace, PLURAL, NAME)
            wait_for(lambda: not real_custom.list_namespaced_custom_object(
                GROUP, VERSION, serving_namespace, PLURAL)["items"], "the BerniniDeployment gone", timeout=300, interval=2)
        finally:
            monitoring.uninstall()


def test_the_chart_monitors_scrape_the_operator_pod_and_every_ray_pod(monitored, real_core):
    ray_pods = {pod.metadata.name for pod in helpers.pods(real_core, monitored.namespace, "ray.io/is-ray-node=yes")}

    def scraped() -> dict[str, list[dict]]:
        pools: dict[str, list[dict]] = {}
        for target in monitored.monitoring.targets():
            if target["health"] == "up":
                pools.setdefault(target["scrapePool"], []).append(target["labels"])
        return pools

    pools = wait_for(lambda: (p := scraped()) and {labels["pod"] for labels in p.get(
        f"podMonitor/{OPERATOR_NAMESPACE}/bernini-operator-ray/0", []) if labels.get("namespace") == monitored.namespace}
        >= ray_pods and p, "every Ray pod scraped", timeout=120, interval=2, explain=lambda: str(scraped()))
    ray = [labels for labels in pools[f"podMonitor/{OPERATOR_NAMESPACE}/bernini-operator-ray/0"]
           if labels["namespace"] == monitored.namespace]
    assert {labels["name"] for labels in ray} == {NAME}, ray
    operator, = pools[f"serviceMonitor/{OPERATOR_NAMESPACE}/bernini-operator/0"]
    assert operator["namespace"] == OPERATOR_NAMESPACE
    # honorLabels: the operator's gauges keep the deployment's namespace, not the operator pod's.
    assert [s["value"][1] for s in monitored.series("bernini_deployment_ready")] == ["1"]
    assert monitored.series("ray_serve_deployment_replica_healthy"), "no Ray Serve series with the deployment's labels"


def test_under_load_every_rule_and_panel_answers_and_the_cost_per_million_matches_the_bench(
        monitored, real_core, real_custom):
    """One client back to back: a steady load (a second would make Serve add a replica and the autoscaler a
    worker halfway through). The bench's figure (tests/bench/cost.py, what make bench-cost prints at concurrency
    1): the mean of status.cost's $/h over the run times the hours a million predictions take at the throughput
    the client counted. Prometheus' figure: bernini:dollars_per_million_predictions, from the operator's gauge and
    Ray Serve's counters, averaged over the last minute's evaluations. Ray exports its counters every 10 s, so a
    one-minute rate swings by about a sixth of itself from one evaluation to the next; the chart's default 5m
    window swings about 3%. BerniniSlow fires meanwhile (its threshold is 1 ms)."""
    namespace = monitored.namespace
    sampler = Sampler(real_custom, namespace)
    load = _load(real_core, namespace)
    sampler.start()
    started = time.monotonic()
    load.start()
    try:
        slow_fired = monitored.wait_alert("BerniniSlow", "firing", "every answer is slower than 1 ms",
                                          timeout=LOAD_SECONDS)
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
        evaluations = monitored.evaluations("bernini:dollars_per_million_predictions", AVERAGED_SECONDS)
        prometheus = {name: monitored.series(name) for name in recorded_names()}
        panels = {expr: monitored.monitoring.query(_filled(expr, namespace)) for expr in dashboard_queries()}
        variables = {variable: monitored.monitoring.api(f"label/{label}/values", **{"match[]": _filled(match, namespace)})
                     for variable, (label, match) in dashboard_variables().items()}
    finally:
        elapsed = time.monotonic() - started
        answers = load.stop()
        dollars_per_hour, nodes = sampler.stop()
    assert answers and not load.failures, load.failures[:3]
    assert evaluations, "no bernini:dollars_per_million_predictions for the deployment"
    bench = dollars_per_hour * hours_per_million(len(answers) / elapsed)
    rule = statistics.mean(evaluations)
    print(f"\n{len(answers)} answers in {elapsed:.0f}s at ${dollars_per_hour:.4f}/h (mean nodes {nodes}): bench "
          f"${bench:.1f} per 1M predictions, Prometheus ${rule:.1f} (ratio {rule / bench:.3f}; its evaluations "
          f"{min(evaluations):.1f}-{max(evaluations):.1f}); BerniniSlow firing {slow_fired:.0f}s into the load")
    assert abs(rule / bench - 1) <= 0.10, (rule, bench)
    assert not [name for name, series in prometheus.items() if not series], prometheus
    stages = {sample["metric"]["deployment"] for sample in prometheus["bernini:stage_latency_ms:p95"]}
    layout = helpers.deployment(real_custom, namespace)["spec"]["layout"]
    assert stages == {DEPLOYMENT_NAMES[stage] for stage in deployments_of_layout(layout)}, stages
    assert not [expr for expr, result in panels.items() if not result], panels
    assert namespace in variables["namespace"] and NAME in variables["name"], variables


def test_slow_clears_when_the_latency_threshold_is_raised(monitored, real_core, node_s3):
    """Under load throughout, so that the p95 is still measured when the alert goes, and stays gone."""
    load = _load(real_core, monitored.namespace)
    load.start()
    try:
        monitored.wait_alert("BerniniSlow", "firing", "under load again", timeout=180)
        monitored.monitoring.install_operator_chart(node_s3, **{**FAST, "latencyP95Ms": HEALED_LATENCY_MS})
        cleared = monitored.wait_alert("BerniniSlow", "", f"the threshold raised to {HEALED_LATENCY_MS} ms")
        time.sleep(FOR_SECONDS + 5)
        p95, after = monitored.series("bernini:latency_ms:p95"), monitored.alert_state("BerniniSlow")
    finally:
        load.stop()
    print(f"\nBerniniSlow gone {cleared:.0f}s after the chart's upgrade")
    assert p95 and float(p95[0]["value"][1]) < HEALED_LATENCY_MS, p95
    assert after == "", f"BerniniSlow {after} again"


def test_not_ready_fires_on_a_version_that_fails_verification_and_clears_when_it_is_reverted(
        monitored, real_custom, node_s3_client, tmp_path):
    """The pending cluster's init containers fail their checksum; past the deadline the operator gives the
    upgrade back and Ready turns False (UpgradeAbandoned) while the old version serves."""
    namespace, broken = monitored.namespace, "1.3.0-corrupt"
    publish_with_a_corrupt_stage(node_s3_client, broken, tmp_path / "compiled")
    serving = helpers.deployment(real_custom, namespace)["spec"]
    started = time.monotonic()
    helpers.patch_version_with_deadline(real_custom, namespace, broken, artifacts_uri(broken), deadline=60)
    monitored.wait_alert("BerniniNotReady", "firing", "the upgrade given back", timeout=480)
    fired = time.monotonic() - started
    assert helpers.condition(helpers.deployment(real_custom, namespace), "Ready")["reason"] == "UpgradeAbandoned"
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, {"spec": {
        "model": serving["model"], "upgradeStrategy": serving["upgradeStrategy"]}})
    cleared = monitored.wait_alert("BerniniNotReady", "", "the serving version's spec back")
    print(f"\nBerniniNotReady firing {fired:.0f}s after the patch (deadline 60s); gone {cleared:.0f}s after the revert")


def test_errors_fire_when_a_stage_raises_and_clear_when_a_good_version_serves(
        monitored, real_core, real_custom, node_s3_client, tmp_path):
    """One client throughout, so that the errors are measured until the good version answers."""
    namespace, raising, good = monitored.namespace, "1.4.0-raises", VERSIONS[0]
    publish_with_a_stage_that_raises(node_s3_client, raising, tmp_path / "compiled")
    _roll_out(real_custom, namespace, raising)
    load = _load(real_core, namespace)
    load.start()
    try:
        fired = monitored.wait_alert("BerniniErrors", "firing", f"{raising} answering 500")
        patched = time.monotonic()
        _roll_out(real_custom, namespace, good)
        wait_for(lambda: any(t > patched and v == good for t, _, v in load.results), f"{good} answering",
                 timeout=120, interval=1)
        while_healing = monitored.alert_state("BerniniErrors")
        cleared = monitored.wait_alert("BerniniErrors", "", f"{good} answering")
    finally:
        results = load.stop()
    failed = Counter(status for _, status, version in results if version != good)
    print(f"\nBerniniErrors firing {fired:.0f}s after {raising} served (answers {dict(failed)}); gone "
          f"{cleared:.0f}s after {good} answered")
    assert failed and set(failed) == {500}, failed
    assert while_healing == "firing", f"BerniniErrors {while_healing or 'gone'} before {good} served"


def _roll_out(real_custom, namespace: str, version: str) -> None:
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, {"spec": {
        "model": {"version": version, "artifactsUri": artifacts_uri(version)}}})
    wait_for(lambda: (b := helpers.ready(real_custom, namespace)) and b["status"].get("modelVersion") == version,
             f"{version} serving", timeout=600, interval=2)


def _load(real_core, namespace: str) -> helpers.Load:
    """One client; a failed answer comes back in milliseconds, so it waits a little between requests."""
    return helpers.Load(lambda: helpers.generate(real_core, namespace, timeout=120, file_format="obj"), pause=0.1)


def _filled(expression: str, namespace: str) -> str:
    """A panel's query as Grafana sends it for one deployment."""
    return re.sub(r"\$namespace\b", namespace, re.sub(r"\$name\b", NAME, expression))
