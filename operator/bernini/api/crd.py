"""Generate the BerniniDeployment CustomResourceDefinition from the pydantic models (`make crds`)."""

from typing import Any

import yaml

from bernini.api import GROUP, KIND, PLURAL, VERSION
from bernini.api.reasons import READY
from bernini.api.spec import BerniniDeploymentSpec
from bernini.api.status import BerniniDeploymentStatus

# The RayService is named after the BerniniDeployment; KubeRay refuses RayService names over 47 characters.
MAX_NAME_LENGTH = 47

_DROPPED_KEYS = {"title", "const", "discriminator"}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return value


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema: refs inlined, Optional as nullable."""
    definitions = schema.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        node = dict(node)
        if "$ref" in node:
            target = definitions[node.pop("$ref").rsplit("/", 1)[-1]]
            node = {**target, **node}  # the field's own description and default win over the model's
        if "anyOf" in node:
            branches = [branch for branch in node.pop("anyOf") if branch.get("type") != "null"]
            if len(branches) != 1:
                raise ValueError(f"cannot express anyOf {branches} structurally")
            node = {**convert(branches[0]), **node, "nullable": True}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS or key == "$defs":
                continue
            if key == "additionalProperties" and value is False:
                continue
            if key == "default":
                if value is None:
                    continue
                value = _without_nulls(value)
            if key in ("exclusiveMinimum", "exclusiveMaximum"):
                # JSON Schema 2020-12 numbers become OpenAPI 3.0's bound plus boolean flag.
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "properties":
                out[key] = {name: convert(child) for name, child in value.items()}
            elif key == "items":
                out[key] = convert(value)
            else:
                out[key] = value
        return out

    return convert(schema)


def _openapi_schema() -> dict[str, Any]:
    spec = structural(BerniniDeploymentSpec.model_json_schema(by_alias=True))
    status = structural(BerniniDeploymentStatus.model_json_schema(by_alias=True))
    return {
        "type": "object",
        "description": BerniniDeploymentSpec.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the RayService is named after it",
            }
        ],
    }


def _condition_column(name: str, condition: str, field: str, priority: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field}',
        "priority": priority,
    }


def custom_resource_definition() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["bd", "bernini"],
                "categories": ["all", "bernini"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _condition_column("Ready", READY, "status"),
                        _condition_column("Reason", READY, "reason"),
                        {"name": "Version", "type": "string", "jsonPath": ".spec.model.version"},
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.serveEndpoint"},
                        {"name": "Workers", "type": "integer", "jsonPath": ".status.capacity.maxWorkers", "priority": 1},
                        {"name": "$/h", "type": "number", "jsonPath": ".status.cost.currentDollarsPerHour",
                         "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": _openapi_schema()},
                }
            ],
        },
    }


def render_yaml() -> str:
    header = "# Generated from operator/bernini/api by `make crds`; do not edit.\n"
    return header + yaml.dump(custom_resource_definition(), Dumper=_NoAliasDumper, sort_keys=False, width=120)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True
