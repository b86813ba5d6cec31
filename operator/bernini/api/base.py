"""Shared pydantic configuration: camelCase on the wire, snake_case in Python, unknown fields refused."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """The wire rules alone. The manifest uses it directly: the init container imports the manifest, and
    parsing attribute docstrings would add to every worker's start-up."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class ApiModel(WireModel):
    """The CRD's models: field docstrings become the schema's descriptions (`kubectl explain`)."""

    model_config = ConfigDict(use_attribute_docstrings=True)
