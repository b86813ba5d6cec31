"""Generate the reference docs (`make docs`); tests/unit/test_generated_docs.py fails when they drift.

A development tool, not part of the package. Its sources: the CRD schema the operator derives from its pydantic
models (so the spec reference says what `kubectl explain` says), the chart's values schema and defaults, the
operator's vocabulary of condition reasons, the instance catalogue with its list prices, and the production
example's footprint per layout.
"""

import json
from pathlib import Path
from typing import Any

import yaml

from bernini.api.crd import custom_resource_definition

ROOT = Path(__file__).resolve().parents[1]
SPEC_REFERENCE = ROOT / "docs" / "reference" / "spec.md"
CHART = ROOT / "charts" / "bernini-operator"
OPERATIONS = ROOT / "docs" / "operations.md"
USER_GUIDE = ROOT / "docs" / "user-guide.md"


def _cell(text: Any) -> str:
    """One Markdown table cell: a single line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(value: Any) -> str:
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def _type(node: dict[str, Any]) -> str:
    if node.get("type") == "array":
        return "[]" + _type(node["items"]) if "items" in node else "array"
    if "type" in node:
        return node["type"]
    if all(isinstance(item, str) for item in node.get("enum", [None])):
        return "string"
    return "any"


def _bounds(node: dict[str, Any]) -> str:
    """The schema's limits in words; patterns are left to `kubectl explain`, they read badly in a table."""
    parts = []
    if "enum" in node:
        parts.append("One of " + ", ".join(f"`{item}`" for item in node["enum"]) + ".")
    limits = []
    if node.get("exclusiveMinimum") is True:  # OpenAPI 3.0, the CRD's
        limits.append(f"above {node['minimum']}")
    elif "exclusiveMinimum" in node:  # JSON Schema draft 7, the chart's
        limits.append(f"above {node['exclusiveMinimum']}")
    elif "minimum" in node:
        limits.append(f"at least {node['minimum']}")
    if node.get("exclusiveMaximum") is True:
        limits.append(f"below {node['maximum']}")
    elif "maximum" in node:
        limits.append(f"at most {node['maximum']}")
    if limits:
        parts.append(", ".join(limits).capitalize() + ".")
    if "maxLength" in node:
        parts.append(f"At most {node['maxLength']} characters.")
    if "maxItems" in node:
        parts.append(f"At most {node['maxItems']} items.")
    return " ".join(parts)


def _anchor(path: str) -> str:
    """GitHub's heading anchor of `path` written as a code span."""
    return "".join(char for char in path.lower() if char.isalnum() or char in "-_")


def _objects(node: dict[str, Any], path: str):
    """Every object of the schema that has fields, parents first."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        if child.get("type") == "array" and "properties" in child.get("items", {}):
            yield from _objects(child["items"], f"{path}.{name}[]")
        elif "properties" in child:
            yield from _objects(child, f"{path}.{name}")


def spec_reference() -> str:
    crd = custom_resource_definition()
    names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    out = [
        "<!-- Generated from operator/bernini/api by `make docs`; do not edit. -->",
        f"# {names['kind']} reference",
        "",
        f"`{crd['spec']['group']}/{version['name']}`, kind `{names['kind']}`, short names "
        + ", ".join(f"`{name}`" for name in names["shortNames"]) + f". {root['description']}",
        "",
        "The same text is in the cluster: `kubectl explain berninideployment.spec --recursive`. Defaults are "
        "filled in by the API server; \"-\" means unset.",
        "",
    ]
    for rule in root.get("x-kubernetes-validations", []):
        out.append(f"- {rule['message']}.")
    out += ["", "## `kubectl get bd` columns", "", "| column | from | shown |", "| --- | --- | --- |"]
    for column in version["additionalPrinterColumns"]:
        shown = "`-o wide`" if column.get("priority") else "always"
        out.append(f"| {column['name'].upper()} | `{_cell(column['jsonPath'])}` | {shown} |")
    for section in ("spec", "status"):
        for path, node in _objects(root["properties"][section], section):
            out += ["", f"## `{path}`", "", _cell(node.get("description", "")), ""]
            out += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
            for name, child in node["properties"].items():
                field = f"{path}.{name}"
                target = f"{field}[]" if child.get("type") == "array" else field
                kind = _type(child)
                if "properties" in child or "properties" in child.get("items", {}):
                    kind = f"[{kind}](#{_anchor(target)})"
                if name in node.get("required", []):
                    default = "required"
                elif "default" in child and "properties" not in child:
                    default = _value(child["default"])
                else:
                    default = "-"
                text = " ".join(part for part in (_cell(child.get("description", "")), _bounds(child)) if part)
                out.append(f"| `{field}` | {kind} | {default} | {text} |")
            rules = node.get("x-kubernetes-validations", [])
            if rules:
                out += ["", "Refused at admission:", ""]
                out += [f"- {_cell(rule['message'])}" for rule in rules]
    return "\n".join(out) + "\n"


def chart_readme() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    out = [
        "<!-- Generated from values.schema.json and values.yaml by `make docs`; do not edit. -->",
        f"# {chart['name']} chart",
        "",
        f"{chart['description']}. Chart {chart['version']}, operator {chart['appVersion']}, Kubernetes "
        f"`{chart['kubeVersion']}`. The chart installs the BerniniDeployment CRD (kept on `helm uninstall`), the "
        "operator with leader election, its RBAC and, opt-in, the monitoring objects. Install KubeRay (>= 1.5.1) "
        "first.",
        "",
        "```bash",
        "helm install bernini charts/bernini-operator -n bernini-system --create-namespace \\",
        "  --set serviceAccount.roleArn=arn:aws:iam::123456789012:role/bernini-operator-artifacts-read",
        "```",
        "",
        "`values.schema.json` refuses bad values at install. The user guide covers the policy for platform "
        "teams ([docs/user-guide.md](../../docs/user-guide.md#policy-for-platform-teams)); operations covers "
        "metrics and alerts ([docs/operations.md](../../docs/operations.md)).",
        "",
        "## Values",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]

    def walk(node: dict[str, Any], values: Any, prefix: str) -> None:
        for name, child in node.get("properties", {}).items():
            key = prefix + name
            present = isinstance(values, dict) and name in values
            value = values[name] if present else None
            default = "-" if not present or "properties" in child and value else _value(value)
            text = " ".join(part for part in (_cell(child.get("description", "")), _bounds(child)) if part)
            out.append(f"| `{key}` | {_type(child)} | {default} | {text} |")
            walk(child, value, key + ".")

    walk(schema, defaults, "")
    return "\n".join(out) + "\n"


def reasons_table() -> str:
    from bernini.api import reasons

    rows = ["| reason | conditions | kind | meaning | what to do |", "| --- | --- | --- | --- | --- |"]
    for reason in reasons.ALL:
        kind = f"{reason.kind}, retried" if reason.retried else str(reason.kind)
        rows.append(f"| `{reason}` | {', '.join(reason.conditions)} | {kind} | {_cell(reason.meaning)} | "
                    f"{_cell(reason.action) or '-'} |")
    return "\n".join(rows)


def instances_table() -> str:
    """The instance catalogue with the shipped list prices: what each type offers one worker pod."""
    from bernini.cost.prices import LIST_PRICES
    from bernini.domain.instances import CATALOGUE, KINDS

    rows = ["| instance type | kind | accelerators | accelerator memory | vCPUs / memory | worker pod gets | list $/h |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, instance in CATALOGUE.items():
        unit = KINDS[instance.kind].unit
        accelerators = f"{instance.accelerators} {unit}s" if instance.accelerators else "-"
        memory = f"{instance.accelerator_memory_gib} GiB" if instance.accelerator_memory_gib else "-"
        pod = f"{instance.worker_cpus} CPUs, {instance.worker_memory_bytes / 2**30:.1f} GiB"
        price = LIST_PRICES.hourly(name)
        rows.append(f"| `{name}` | {instance.kind} | {accelerators} | {memory} | {instance.vcpus} / "
                    f"{instance.memory_gib} GiB | {pod} | {'-' if price is None else f'{price:.4f}'} |")
    return "\n".join(rows) + f"\n\nList prices: {LIST_PRICES.source}, as of {LIST_PRICES.as_of}."


def layouts_table() -> str:
    """The production example's minimum footprint and list price in each layout."""
    from bernini.api.spec import BerniniDeploymentSpec
    from bernini.cost.estimate import estimate
    from bernini.cost.prices import LIST_PRICES
    from bernini.domain.pipeline import LAYOUTS
    from bernini.render.capacity import plan

    example = yaml.safe_load((ROOT / "examples" / "bernini-production.yaml").read_text())["spec"]
    rows = ["| layout | accelerated nodes | NeuronCores | CPU group nodes | $/h at minimum |", "| --- | --- | --- | --- | --- |"]
    for layout in LAYOUTS:
        capacity = plan(BerniniDeploymentSpec.model_validate({**example, "layout": layout}))

        def nodes(cpu: bool) -> str:
            return ", ".join(f"{g.min_replicas} {g.worker.instance.name}" for g in capacity.groups
                             if g.min_replicas and (g.worker.instance.kind == "cpu") == cpu)
        cost = estimate(capacity, {}, LIST_PRICES)
        rows.append(f"| {layout} | {nodes(False)} | {float(capacity.min_accelerators):g} | {nodes(True)} | "
                    f"{cost.min_dollars_per_hour:.4f} |")
    return "\n".join(rows)


def _between_markers(source: Path | str, name: str, table: str) -> str:
    """source's text (a path's, or the text itself), written by hand except the generated table between its
    `<!-- name:begin/end -->` markers."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = source.read_text() if isinstance(source, Path) else source
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}\n{end}{tail}"


def outputs() -> dict[Path, str]:
    return {SPEC_REFERENCE: spec_reference(), CHART / "README.md": chart_readme(),
            OPERATIONS: _between_markers(OPERATIONS, "reasons", reasons_table()),
            USER_GUIDE: _between_markers(_between_markers(USER_GUIDE, "instances", instances_table()),
                                         "layouts", layouts_table())}


def main() -> None:
    for path, text in outputs().items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
