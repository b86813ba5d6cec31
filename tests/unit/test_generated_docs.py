"""The reference docs are generated (`make docs`): the spec reference from the pydantic models, the chart README
from its values schema, the reasons table from the operator's reasons, the instance table from the catalogue.
Committed copies must not drift."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("gendocs", ROOT / "hack" / "gendocs.py")
gendocs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gendocs)


def test_committed_docs_match_the_generator():
    for path, expected in gendocs.outputs().items():
        assert path.read_text() == expected, f"{path.relative_to(ROOT)} drifted from its sources: run `make docs`"


def test_every_spec_field_is_in_the_reference():
    from bernini.api.crd import custom_resource_definition

    reference = gendocs.SPEC_REFERENCE.read_text()
    root = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in gendocs._objects(root["properties"][section], section):
            for name in node["properties"]:
                assert f"| `{path}.{name}` |" in reference, f"{path}.{name} is missing from {gendocs.SPEC_REFERENCE}"


def test_the_readme_states_the_default_footprint_and_its_price():
    from bernini.cost.estimate import estimate
    from bernini.cost.prices import LIST_PRICES
    from bernini.render.capacity import plan
    from tests.unit.specs import make_spec

    capacity = plan(make_spec())
    nodes = [f"one `{g.worker.instance.name}`" for g in capacity.groups if g.min_replicas == 1]
    assert len(nodes) == capacity.min_workers == 2
    price = estimate(capacity, {}, LIST_PRICES).min_dollars_per_hour
    sentence = f"{nodes[0]} and {nodes[1]} at\nminimum (${price:.2f} an hour at list price)"
    assert sentence in (ROOT / "README.md").read_text()
