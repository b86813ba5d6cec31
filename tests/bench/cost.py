"""make bench-cost: cost per prediction of the Serve pipeline on this machine. Drives it closed-loop at rising
concurrency, keeps the highest throughput whose p95 latency meets the target, and prints predictions/hour and
$ per 1M predictions at the price of the instance the figure stands for, beside the same figures for the stage
graphs called in-process (no Ray, the peer) measured in the same run.

Here that is CPU: the 2 cores of this machine priced as 2 of an m6i.xlarge's 4 vCPUs from the operator's
shipped table (m6i.large's share); pass --instance-type and --vcpus for another reading."""

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bernini.cost.prices import LIST_PRICES
from bernini.domain.instances import CATALOGUE
from bernini.domain.pipeline import LAYOUTS
from tests.bench.figures import measure, percentile
from tests.bench.serve import InProcess, compiled, serve_pipeline

LEVELS = (1, 2, 4, 8)


def sweep(call, requests: int) -> dict[int, tuple[float, float, float]]:
    """concurrency -> (p50 s, p95 s, predictions/s)."""
    rows = {}
    for concurrency in LEVELS:
        latencies, throughput = measure(call, requests, concurrency)
        rows[concurrency] = (statistics.median(latencies), percentile(latencies, 0.95), throughput)
    return rows


def best(rows: dict[int, tuple[float, float, float]], target: float) -> tuple[int, float] | None:
    """(concurrency, predictions/s) of the highest throughput meeting the p95 target."""
    meeting = [(throughput, concurrency) for concurrency, (_, p95, throughput) in rows.items() if p95 <= target]
    return max(meeting)[::-1] if meeting else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    parser.add_argument("--p95-target-seconds", type=float, default=2.0)
    parser.add_argument("--instance-type", default="m6i.xlarge", choices=sorted(CATALOGUE))
    parser.add_argument("--vcpus", type=int, default=os.cpu_count(), help="vCPUs of the instance this run used")
    args = parser.parse_args()
    instance = CATALOGUE[args.instance_type]
    dollars_per_hour = LIST_PRICES.hourly(args.instance_type) * min(1.0, args.vcpus / instance.vcpus)

    work = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    artifacts = compiled(work)
    peer = InProcess(artifacts)
    peer()  # warm up
    results = {"in-process": sweep(peer, args.requests)}
    with serve_pipeline(work, artifacts) as calls:
        for layout, call in calls.items():
            results[layout] = sweep(call, args.requests)
    shutil.rmtree(work, ignore_errors=True)

    print(f"{args.requests} requests per level, text prompt -> GLB mesh, cpu-compiled reference model; "
          f"priced at ${dollars_per_hour:.4f}/h ({args.vcpus} of {args.instance_type}'s {instance.vcpus} vCPUs, "
          f"{LIST_PRICES.source}, {LIST_PRICES.as_of}); p95 target {args.p95_target_seconds:g} s")
    print(f"{'path':<11} {'conc':>4} {'p50 ms':>7} {'p95 ms':>7} {'pred/s':>7} {'pred/hour':>10} {'$/1M pred':>10}")
    for path, rows in results.items():
        for concurrency, (p50, p95, throughput) in rows.items():
            per_hour = throughput * 3600
            print(f"{path:<11} {concurrency:>4} {p50 * 1000:7.0f} {p95 * 1000:7.0f} {throughput:7.2f} {per_hour:10,.0f} "
                  f"{dollars_per_hour / per_hour * 1e6:10.2f}" + ("" if p95 <= args.p95_target_seconds else "  (p95 over target)"))
    chosen = {path: best(rows, args.p95_target_seconds) for path, rows in results.items()}
    for path, point in chosen.items():
        if point is None:
            print(f"{path}: no concurrency level met the p95 target")
            continue
        concurrency, throughput = point
        print(f"{path}: best at concurrency {concurrency}: {throughput * 3600:,.0f} predictions/hour, "
              f"${dollars_per_hour / (throughput * 3600) * 1e6:.2f} per 1M predictions")
    for layout in LAYOUTS:
        if chosen["in-process"] and chosen[layout]:
            print(f"cost ratio {layout}/in-process at the target: {chosen['in-process'][1] / chosen[layout][1]:.2f}")


if __name__ == "__main__":
    main()
