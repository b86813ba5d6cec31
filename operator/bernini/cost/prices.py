"""Instance prices in $/hour: the table shipped with the operator, and a platform team's override file."""

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field

from bernini.api.base import WireModel
from bernini.domain.instances import CATALOGUE


# Accelerator instances list under $100/h (p5.48xlarge launched at $98.32/h; the dearest type the operator knows,
# trn1.32xlarge, is $21.50/h): a price ten times that is a typo or a unit slip (cents, $/month), and makes every
# cost figure absurd (1e308 times a few workers is infinity).
MAX_DOLLARS_PER_HOUR = 1000.0
# NaN and infinity are no JSON: the API server would refuse every status patch that carries a cost.
HourlyPrice = Annotated[float, Field(allow_inf_nan=False, le=MAX_DOLLARS_PER_HOUR)]


class PriceTable(WireModel):
    """Prices by instance type, with where they came from and when: status shows both beside every figure."""

    source: str = Field(min_length=1, max_length=256)
    as_of: str = Field(min_length=1, max_length=64)
    dollars_per_hour: dict[str, HourlyPrice] = Field(default_factory=dict)

    def hourly(self, instance_type: str) -> float | None:
        return self.dollars_per_hour.get(instance_type)

    def overridden_by(self, override: "PriceTable") -> "PriceTable":
        """The override's prices win; types it does not list keep the shipped price (and say so in source)."""
        kept = set(self.dollars_per_hour) - set(override.dollars_per_hour)
        source = override.source if not kept else f"{override.source}; other types: {self.source}"
        return PriceTable(source=source[:256], as_of=override.as_of,
                          dollars_per_hour={**self.dollars_per_hour, **override.dollars_per_hour})


class PriceFileError(ValueError):
    pass


def load_override(path: Path) -> PriceTable:
    """A YAML file {source, asOf, dollarsPerHour: {type: price}} (the chart's `prices` value): refused whole,
    with the reason, when a price is negative, not finite, above MAX_DOLLARS_PER_HOUR, or names a type the
    operator does not know."""
    try:
        table = PriceTable.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise PriceFileError(f"{path}: {error}") from error
    unknown = sorted(set(table.dollars_per_hour) - set(CATALOGUE))
    negative = sorted(name for name, price in table.dollars_per_hour.items() if price < 0)
    if unknown or negative:
        raise PriceFileError(f"{path}: unknown instance types {unknown}" if unknown else
                             f"{path}: negative prices for {negative}")
    return table


# On-demand Linux list prices in us-east-1, transcribed by hand from AWS's public EC2 pricing page; spot, savings
# plans and other regions differ: override them (chart value `prices`).
LIST_PRICES = PriceTable(
    source="AWS EC2 on-demand list price, Linux, us-east-1 (shipped table)",
    as_of="2026-11",
    dollars_per_hour={
        "inf2.xlarge": 0.7582, "inf2.8xlarge": 1.9679, "inf2.24xlarge": 6.4906, "inf2.48xlarge": 12.9813,
        "trn1.2xlarge": 1.3438, "trn1.32xlarge": 21.50,
        "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.12xlarge": 5.672, "g5.48xlarge": 16.288,
        "g6.xlarge": 0.8048, "g6.12xlarge": 4.6016, "g6e.xlarge": 1.861, "g6e.12xlarge": 10.4926,
        "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384, "m6i.4xlarge": 0.768, "c6i.4xlarge": 0.68,
    },
)
