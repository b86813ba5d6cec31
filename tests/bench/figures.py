"""What the benchmarks share: the one percentile they report (nearest rank: always a measured value, never
interpolated) and the closed-loop load driver."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(call, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_):
        started = time.perf_counter()
        call()
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    return latencies, requests / (time.perf_counter() - started)
