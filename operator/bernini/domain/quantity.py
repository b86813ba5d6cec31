"""Kubernetes quantities as numbers, for Ray's numeric resource options."""

from decimal import Decimal

_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "m": Decimal("0.001"),
}


def parse_quantity(quantity: str) -> Decimal:
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if quantity.endswith(suffix):
            return Decimal(quantity[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(quantity)


def to_bytes(quantity: str) -> int:
    return int(parse_quantity(quantity))
