"""What the chart's PrometheusRule and Grafana dashboard query: the metric names, so tests can hold them against
what the operator and a real Ray head export."""

import json
import re
from pathlib import Path


CHART = Path(__file__).parents[2] / "charts" / "bernini-operator"
DASHBOARD = CHART / "dashboards" / "bernini.json"
_NAME = re.compile(r"\b((?:ray_serve_|bernini_|bernini:)[A-Za-z0-9_:]*)")
_LABEL_MATCHER = re.compile(r"\{[^}]*\}")
_LABEL_VALUES = re.compile(r"label_values\((.+), *(\w+)\)")


def prometheus_rule(*values: str) -> dict:
    """The chart's PrometheusRule rendered with its defaults (plus `values`, as --set flags)."""
    from tests.delivery.test_chart import _rendered

    return next(doc for doc in _rendered("metrics.prometheusRule.enabled=true", *values) if doc["kind"] == "PrometheusRule")


def _rules() -> list[dict]:
    return [rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]


def dashboard_variables() -> dict[str, tuple[str, str]]:
    """Each query variable of the dashboard as (label, series selector): Grafana's label_values(selector, label)."""
    variables = {}
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            selector, label = _LABEL_VALUES.fullmatch(variable["definition"]).groups()
            variables[variable["name"]] = (label, selector)
    return variables


def queried_names() -> set[str]:
    """Every series name a rule or a panel reads (label matchers left out: their values are not names)."""
    expressions = [rule["expr"] for rule in _rules()] + dashboard_queries()
    return {name for expr in expressions for name in _NAME.findall(_LABEL_MATCHER.sub("{}", expr))}
