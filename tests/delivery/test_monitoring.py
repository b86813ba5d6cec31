"""The chart's monitoring: the PrometheusRule passes `promtool check rules` and its own unit tests (real promtool,
built from the Go module proxy), and the rules and the dashboard read only series that exist: recorded by the
rules, or exported by the operator. (tests/serve holds the Ray Serve names against a real Ray head.)"""

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from bernini.reconcile.metrics import FromStatus
from localdev.cluster import DEFAULT_BIN_DIR
from tests.delivery.monitoring import CHART, dashboard_queries, prometheus_rule, queried_names, recorded_names
from tests.delivery.test_chart import run

RULE_TESTS = Path(__file__).parent / "prometheus" / "rules_test.yaml"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    promtool = DEFAULT_BIN_DIR / "promtool"
    assert promtool.exists(), "promtool is missing: `make promtool` builds it (make test does)"
    return subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_prometheus_rules_pass_promtool_check_and_their_unit_tests(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]}))
    shutil.copy(RULE_TESTS, tmp_path / "rules_test.yaml")
    checked = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # The same tests fail against rules with another threshold: they measure, they do not just parse.
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(
        {"groups": prometheus_rule("metrics.prometheusRule.latencyP95Ms=60000")["spec"]["groups"]}))
    assert _promtool("test", "rules", "rules_test.yaml", cwd=tmp_path).returncode != 0


def test_the_rules_window_and_alert_durations_are_values(tmp_path):
    groups = prometheus_rule("metrics.prometheusRule.window=90s", "metrics.prometheusRule.notReadyFor=30s",
                             "metrics.prometheusRule.errorsFor=1h30m", "metrics.prometheusRule.slowFor=0s")["spec"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    windowed = [rule["expr"] for rule in rules if "rate(" in rule["expr"]]
    assert windowed and all("[90s]" in expr and "[5m]" not in expr for expr in windowed), windowed
    assert {rule["alert"]: rule["for"] for rule in rules if "alert" in rule} == {
        "BerniniNotReady": "30s", "BerniniErrors": "1h30m", "BerniniSlow": "0s"}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    checked = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The values schema refuses what Prometheus would refuse only once the rule is loaded.
    for bad in ("window=5", "window=0m", "notReadyFor=ten", "errorsFor=-1m"):
        refused = run("helm", "template", "bernini", str(CHART), "--set", "metrics.prometheusRule.enabled=true",
                      "--set", f"metrics.prometheusRule.{bad}", check=False)
        assert refused.returncode != 0 and "values don't meet the specifications of the schema" in refused.stderr, bad


def _operator_names() -> set[str]:
    """The names the operator's own exporter produces, the status-derived gauges included (one cached body)."""
    from bernini.reconcile import metrics

    registry = CollectorRegistry()
    body = {"metadata": {"namespace": "models", "name": "bernini"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                       "lastTransitionTime": "2026-12-04T00:00:00Z"}],
                       "cost": {"currentDollarsPerHour": 0.76, "minDollarsPerHour": 0.76, "maxDollarsPerHour": 3.04,
                                "workers": 1, "priceSource": "list", "pricesAsOf": "2026-12-01",
                                "instanceTypes": [{"instanceType": "inf2.xlarge", "workers": 1, "dollarsPerHour": 0.76}]}}}
    registry.register(FromStatus(lambda: [json.dumps(body)]))
    for collector in (metrics.RECONCILES, metrics.RECONCILE_SECONDS, metrics.API_WRITES, metrics.LEADER):
        registry.register(collector)
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_rules_and_dashboard_read_only_recorded_or_exported_series():
    queried = queried_names()
    assert dashboard_queries() and {"bernini_cost_dollars_per_hour", "bernini_deployment_ready"} <= queried
    recorded = {name for name in queried if ":" in name}
    assert recorded <= recorded_names(), recorded - recorded_names()
    operator = {name for name in queried if name.startswith("bernini_")}
    assert operator <= _operator_names(), operator - _operator_names()
