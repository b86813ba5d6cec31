"""The CRD is generated from the pydantic models; committed copies must not drift and must be structural."""

from pathlib import Path

import yaml

from bernini.api.crd import custom_resource_definition, render_yaml

ROOT = Path(__file__).parents[2]
COMMITTED = [
    ROOT / "crds" / "bernini.dev_berninideployments.yaml",
    ROOT / "charts" / "bernini-operator" / "crds" / "bernini.dev_berninideployments.yaml",
]
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}


def _walk(schema, path="spec"):
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_committed_crds_match_the_generator():
    expected = render_yaml()
    for path in COMMITTED:
        assert path.read_text() == expected, f"{path} drifted from the pydantic models: run `make crds`"


def _schema():
    return custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural_and_documented():
    root = _schema()
    for section in ("spec", "status"):
        for path, node in _walk(root["properties"][section], section):
            assert not FORBIDDEN & node.keys(), f"{path} uses {FORBIDDEN & node.keys()}"
            assert node.get("additionalProperties") is not False, path
            assert "type" in node, f"{path} has no type"
            if not path.endswith("[]"):  # kubectl explain documents a list by the list field's description
                assert node.get("description"), f"{path} has no description for kubectl explain"
            if "exclusiveMinimum" in node:
                assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_optional_fields_are_nullable_and_defaults_carry_no_nulls():
    spec = _schema()["properties"]["spec"]
    assert spec["properties"]["s3"]["properties"]["endpointUrl"]["nullable"] is True
    assert spec["properties"]["s3"]["default"] == {"region": "us-east-1"}
    triangulation = spec["properties"]["stages"]["properties"]["triangulation"]
    # Per-stage defaults live on each field, so a partly given stage is filled with that stage's defaults.
    assert triangulation["properties"]["cpus"]["default"] == 2.0
    assert spec["properties"]["stages"]["properties"]["encoder"]["properties"]["maxReplicas"]["default"] == 2
    # No stored default for the accelerator amount: a default would sit beside an older object's neuronCores
    # (which the both-set rule refuses) and would be wrong for kind cpu; the code fills it per kind.
    for stage in ("encoder", "triangulation"):
        for field in ("accelerators", "neuronCores"):
            assert "default" not in spec["properties"]["stages"]["properties"][stage]["properties"][field]


def test_cross_field_rules_and_conventions():
    crd = custom_resource_definition()
    version = crd["spec"]["versions"][0]
    stage = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["stages"]["properties"]["encoder"]
    rules = {rule["rule"] for rule in stage["x-kubernetes-validations"]}
    assert "self.minReplicas <= self.maxReplicas" in rules
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Endpoint", "Age"} <= columns.keys()
    assert "bd" in crd["spec"]["names"]["shortNames"]


def test_generated_yaml_has_no_anchors():
    text = render_yaml()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text)["metadata"]["name"] == "berninideployments.bernini.dev"
