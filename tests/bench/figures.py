"""The one percentile the benchmarks report (nearest rank: always a measured value, never interpolated)."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
