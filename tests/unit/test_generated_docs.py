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
