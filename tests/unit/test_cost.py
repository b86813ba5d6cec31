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


def _rayservice(active: int | None, pending: int | None = None, deployments: dict | None = None) -> dict:
    def side(workers):
        return {"rayClusterName": "c", **({"rayClusterStatus": {"desiredWorkerReplicas": workers}} if workers is not None else {})}
    status = {"activeServiceStatus": side(active)}
    if pending is not None:
        status["pendingServiceStatus"] = side(pending)
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
    cost = estimate(capacity, capacity.min_workers + 2, LIST_PRICES)
    assert cost.min_dollars_per_hour == round(accelerated.min_replicas * price + cpu.min_replicas * cpu_price, 4)
    assert cost.max_dollars_per_hour == round(accelerated.max_replicas * price + cpu.max_replicas * cpu_price, 4)
    assert cost.current_dollars_per_hour == round((accelerated.min_replicas + 2) * price + cpu.min_replicas * cpu_price, 4)
    assert [(t.instance_type, t.workers) for t in cost.instance_types] == [
        ("inf2.xlarge", accelerated.min_replicas + 2), ("m6i.xlarge", cpu.min_replicas)]
    assert estimate(capacity, 0, LIST_PRICES).current_dollars_per_hour == 0


def test_with_groups_of_different_prices_the_extra_workers_are_priced_at_the_dearest():
    capacity = plan(make_spec(**TWO_TYPES))
    cost = estimate(capacity, capacity.min_workers + 1, LIST_PRICES)
    extra = {t.instance_type: t.workers for t in cost.instance_types}
    minimum = {g.worker.instance.name: g.min_replicas for g in capacity.groups}
    assert extra["inf2.8xlarge"] == minimum["inf2.8xlarge"] + 1 and extra["inf2.xlarge"] == minimum["inf2.xlarge"]


def test_an_unpriced_type_is_named_not_hidden():
    table = PriceTable(source="partial", as_of="today", dollars_per_hour={"inf2.xlarge": 1.0})
    cost = estimate(plan(make_spec(**TWO_TYPES)), 3, table)
    assert cost.unpriced_instance_types == ["inf2.8xlarge", "m6i.xlarge"]


def test_kuberay_worker_counts_of_both_clusters_are_summed_during_an_upgrade():
    assert rayservice_status(_rayservice(None)).desired_workers is None
    assert rayservice_status(_rayservice(2)).desired_workers == 2
    assert rayservice_status(_rayservice(2, 1)).desired_workers == 3


def _status(spec, rayservice):
    preflight = Preflight(True, Cause("Verified", "ok"), make_manifest(), "ab" * 32)
    seen = Observation(1, preflight, plan(spec), None, rayservice_status(rayservice))
    return desired_status("bernini", "models", spec, seen, read_back({}), "now")[0]


def test_status_carries_cost_stages_in_pipeline_order_and_the_manifest_digest():
    deployments = {"BerniniIngress": {"status": "HEALTHY"}, "Diffusion": {"status": "UPSCALING", "message": "1 -> 2"},
                   "Encoder": {"status": "HEALTHY"}}
    status = _status(make_spec(layout="staged"), _rayservice(3, deployments=deployments))
    assert status["cost"]["workers"] == 3 and status["cost"]["priceSource"] == LIST_PRICES.source
    assert status["cost"]["currentDollarsPerHour"] == round(2 * LIST_PRICES.hourly("inf2.xlarge")
                                                            + LIST_PRICES.hourly("m6i.xlarge"), 4)
    assert [(s["name"], s["status"]) for s in status["stages"]] == [
        ("Encoder", "HEALTHY"), ("Diffusion", "UPSCALING"), ("BerniniIngress", "HEALTHY")]
    assert status["stages"][1]["message"] == "1 -> 2" and status["stages"][1]["maxReplicas"] >= 1
    assert status["artifacts"]["manifestSha256"] == "ab" * 32


def test_suspended_or_not_yet_created_costs_nothing_now():
    assert _status(make_spec(suspend=True), _rayservice(2))["cost"]["currentDollarsPerHour"] == 0
    assert _status(make_spec(), None)["cost"]["workers"] == 0
    reported_nothing = _status(make_spec(), _rayservice(None))["cost"]
    assert reported_nothing["workers"] == plan(make_spec()).min_workers


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
