"""Prices and the cost estimate the status and the metrics carry."""

import pytest
from pydantic import ValidationError

from bernini.api.kuberay import rayservice_status
from bernini.api.reasons import Cause
from bernini.api.status import read_back
from bernini.cost.estimate import estimate
from bernini.cost.prices import LIST_PRICES, MAX_DOLLARS_PER_HOUR, PriceFileError, PriceTable, load_override
from bernini.domain.instances import CATALOGUE
from bernini.reconcile.status import Observation, desired_status
from bernini.render.capacity import plan
from bernini.artifacts.preflight import Preflight
from tests.unit.specs import make_manifest, make_spec

TWO_TYPES = {"accelerator": {"kind": "neuron", "instanceTypes": ["inf2.xlarge", "inf2.8xlarge"]}}


def _rayservice(active: str | None = "c", pending: str | None = None, deployments: dict | None = None) -> dict:
    status = {"activeServiceStatus": {"rayClusterName": active}} if active else {}
    if pending:
        status["pendingServiceStatus"] = {"rayClusterName": pending}
    if deployments:
        status["activeServiceStatus"]["applicationStatuses"] = {"bernini": {"serveDeploymentStatuses": deployments}}
    return {"metadata": {"name": "bernini"}, "status": status}


def test_the_shipped_table_prices_every_catalogued_type_with_its_source_and_date():
    assert set(LIST_PRICES.dollars_per_hour) == set(CATALOGUE)
    assert all(price > 0 for price in LIST_PRICES.dollars_per_hour.values())
    assert LIST_PRICES.source and LIST_PRICES.as_of


def test_an_override_wins_for_its_types_and_says_which_prices_it_left(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("source: spot, 30-day average\nasOf: '2026-11-01'\ndollarsPerHour:\n  inf2.xlarge: 0.2275\n")
    table = LIST_PRICES.overridden_by(load_override(path))
    assert table.hourly("inf2.xlarge") == 0.2275 and table.hourly("g5.xlarge") == LIST_PRICES.hourly("g5.xlarge")
    assert table.as_of == "2026-11-01" and table.source.startswith("spot, 30-day average; other types: AWS")


@pytest.mark.parametrize("text, problem", [
    ("source: s\nasOf: x\ndollarsPerHour: {inf9.huge: 1}\n", "unknown instance types ['inf9.huge']"),
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: -1}\n", "negative prices for ['inf2.xlarge']"),
    ("source: s\ndollarsPerHour: {}\n", "asOf"),
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: cheap}\n", "valid number"),
    ("[unclosed", "while parsing"),
    # NaN and infinity are no JSON (every status patch would be refused); 1e308 would make every figure absurd.
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: .nan}\n", "finite number"),
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: .inf}\n", "finite number"),
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: -.inf}\n", "finite number"),
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: 1e308}\n", "less than or equal to 1000"),  # a YAML string
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: 1.0e+308}\n", "less than or equal to 1000"),  # a YAML float
    ("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: 2150}\n", "less than or equal to 1000"),  # cents, not dollars
])
def test_a_bad_price_file_is_refused_whole_with_the_reason(tmp_path, text, problem):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(PriceFileError, match="prices.yaml") as error:
        load_override(path)
    assert problem in str(error.value)


@pytest.mark.parametrize("price", [float("nan"), float("inf"), float("-inf"), 1e308, MAX_DOLLARS_PER_HOUR * 1.01])
def test_no_price_table_holds_a_price_that_is_not_finite_or_absurd(price):
    with pytest.raises(ValidationError):
        PriceTable(source="s", as_of="x", dollars_per_hour={"inf2.xlarge": price})


def test_the_price_ceiling_leaves_room_above_every_real_price():
    assert max(LIST_PRICES.dollars_per_hour.values()) * 10 < MAX_DOLLARS_PER_HOUR


def test_each_group_costs_its_workers_at_the_list_price():
    capacity = plan(make_spec())
    accelerated, cpu = capacity.groups
    price, cpu_price = LIST_PRICES.hourly("inf2.xlarge"), LIST_PRICES.hourly("m6i.xlarge")
    cost = estimate(capacity, {"inf2.xlarge": accelerated.min_replicas + 2, "m6i.xlarge": 3}, LIST_PRICES)
    assert cost.min_dollars_per_hour == round(accelerated.min_replicas * price + cpu.min_replicas * cpu_price, 4)
    assert cost.max_dollars_per_hour == round(accelerated.max_replicas * price + cpu.max_replicas * cpu_price, 4)
    assert cost.current_dollars_per_hour == round((accelerated.min_replicas + 2) * price + 3 * cpu_price, 4)
    assert [(t.instance_type, t.workers) for t in cost.instance_types] == [
        ("inf2.xlarge", accelerated.min_replicas + 2), ("m6i.xlarge", 3)]
    assert estimate(capacity, {}, LIST_PRICES).current_dollars_per_hour == 0


def test_an_unpriced_type_is_named_not_hidden():
    table = PriceTable(source="partial", as_of="today", dollars_per_hour={"inf2.xlarge": 1.0})
    cost = estimate(plan(make_spec(**TWO_TYPES)), {"g5.xlarge": 1}, table)
    assert cost.unpriced_instance_types == ["g5.xlarge", "inf2.8xlarge", "m6i.xlarge"]


def _status(spec, rayservice, workers=None):
    preflight = Preflight(True, Cause("Verified", "ok"), make_manifest(), "ab" * 32)
    seen = Observation(1, preflight, plan(spec), None, rayservice_status(rayservice), workers=workers)
    return desired_status("bernini", "models", spec, seen, read_back({}), "now")[0]


def _workers(status) -> dict[str, int]:
    return {t["instanceType"]: t["workers"] for t in status["cost"]["instanceTypes"]}


def test_status_carries_cost_stages_in_pipeline_order_and_the_manifest_digest():
    deployments = {"BerniniIngress": {"status": "HEALTHY"}, "Diffusion": {"status": "UPSCALING", "message": "1 -> 2"},
                   "Encoder": {"status": "HEALTHY"}}
    status = _status(make_spec(layout="staged"), _rayservice(deployments=deployments),
                     {"inf2.xlarge": 2, "m6i.xlarge": 1})
    assert status["cost"]["workers"] == 3 and status["cost"]["priceSource"] == LIST_PRICES.source
    assert status["cost"]["currentDollarsPerHour"] == round(2 * LIST_PRICES.hourly("inf2.xlarge")
                                                            + LIST_PRICES.hourly("m6i.xlarge"), 4)
    assert [(s["name"], s["status"]) for s in status["stages"]] == [
        ("Encoder", "HEALTHY"), ("Diffusion", "UPSCALING"), ("BerniniIngress", "HEALTHY")]
    assert status["stages"][1]["message"] == "1 -> 2" and status["stages"][1]["maxReplicas"] >= 1
    assert status["artifacts"]["manifestSha256"] == "ab" * 32


def test_an_idle_accelerator_group_costs_nothing_while_the_cpu_group_serves():
    idle = _status(make_spec(), _rayservice(), {"inf2.xlarge": 0, "m6i.xlarge": 1})
    assert _workers(idle) == {"inf2.xlarge": 0, "m6i.xlarge": 1}
    assert idle["cost"]["currentDollarsPerHour"] == LIST_PRICES.hourly("m6i.xlarge")


def test_during_an_upgrade_both_clusters_workers_are_paid_for_whatever_their_type():
    # The old cluster ran on g5 (not this spec's type); the controller sums the counts over both clusters.
    status = _status(make_spec(), _rayservice("old", "new"), {"g5.xlarge": 2, "inf2.xlarge": 1, "m6i.xlarge": 2})
    assert _workers(status) == {"inf2.xlarge": 1, "m6i.xlarge": 2, "g5.xlarge": 2}
    assert status["cost"]["maxDollarsPerHour"] == _status(make_spec(), _rayservice())["cost"]["maxDollarsPerHour"]


def test_suspended_or_not_yet_created_costs_nothing_now_and_an_unseen_cluster_costs_its_minima():
    assert _status(make_spec(suspend=True), _rayservice(), {"inf2.xlarge": 2})["cost"]["currentDollarsPerHour"] == 0
    assert _status(make_spec(), None)["cost"]["workers"] == 0
    not_seen_yet = _status(make_spec(), _rayservice())["cost"]
    assert not_seen_yet["workers"] == plan(make_spec()).min_workers


def test_the_operator_refuses_to_start_on_a_bad_price_file(tmp_path, capsys):
    from bernini.cli import main

    path = tmp_path / "prices.yaml"
    path.write_text("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: -1}\n")
    assert main(["operator", f"--prices={path}", "--metrics-port=0"]) == 2
    assert "negative prices for ['inf2.xlarge']" in capsys.readouterr().err


def test_the_operator_refuses_to_start_on_a_price_that_is_not_finite(tmp_path, capsys):
    from bernini.cli import main

    path = tmp_path / "prices.yaml"
    path.write_text("source: s\nasOf: x\ndollarsPerHour: {inf2.xlarge: .nan}\n")
    assert main(["operator", f"--prices={path}", "--metrics-port=0"]) == 2
    assert "Input should be a finite number" in capsys.readouterr().err
