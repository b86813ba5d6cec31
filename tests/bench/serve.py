"""make bench-serve: the Serve pipeline in each layout (fused: the ingress, FusedStages and Triangulation;
staged: the ingress and four stage deployments over handles), both applications on one Ray head, against
calling the same loaded stage graphs in-process, at concurrency 1 and 8, the three paths interleaved. Medians
and p95 of per-request latency; per layout, the p50 overhead and what Ray's processes spend per request
beyond the stage work."""

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from bernini.compile import compile_model
from bernini.domain.pipeline import DEPLOYMENT_NAMES, LAYOUTS, deployments_of_layout
from localdev.ray_head import RayHead
from bernini.serve import stages
from tests.bench.figures import measure, percentile
from localdev.waiting import wait_for
from tests.serve.conftest import rendered_serve_config

ROOT = Path(__file__).parents[2]
PROMPT = json.loads((ROOT / "examples" / "inputs" / "chair-prompt.json").read_text())["prompt"]


class InProcess:
    """The same graphs and the same stage code, one Python process, no Ray. Records each call's stage times."""

    def __init__(self, artifacts: Path):
        torch.set_num_threads(1)  # as each Serve replica
        self.encoder = stages.load_graph(artifacts, "encoder-text")
        self.denoiser = stages.load_graph(artifacts, "diffusion")
        self.decoders = stages.load_decoders(artifacts)
        self.timings: list[dict[str, float]] = []
        self.cpu_seconds: list[float] = []

    def __call__(self) -> bytes:
        timings, started, cpu = {}, time.perf_counter(), time.thread_time()
        condition = stages.encode(self.encoder, stages.text_tensor(PROMPT))
        timings["encoder"], started = time.perf_counter() - started, time.perf_counter()
        latent = stages.sample_latent(self.denoiser, condition, 8, 3.0, 0)
        timings["diffusion"], started = time.perf_counter() - started, time.perf_counter()
        sdf = stages.decode_batch(self.decoders, [latent])[0]
        timings["decoder"], started = time.perf_counter() - started, time.perf_counter()
        mesh = stages.mesh_bytes(sdf, "glb")[0]
        timings["triangulation"] = time.perf_counter() - started
        self.timings.append(timings)
        self.cpu_seconds.append(time.thread_time() - cpu)  # the stage work's CPU, on this one thread
        return mesh


class ServeCall:
    """One POST through Serve's HTTP proxy; records the stage times the ingress measured around each handle call."""

    def __init__(self, head: RayHead, application: str):
        self.head, self.application = head, application
        self.url = f"http://127.0.0.1:{head.serve_port}/{application}?format=glb&seed=0"
        self.body = json.dumps({"prompt": PROMPT}).encode()
        self.timings: list[dict[str, float]] = []
        self.request_ids: list[str] = []

    def __call__(self) -> bytes:
        request = urllib.request.Request(self.url, data=self.body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            self.timings.append(json.loads(response.headers["X-Bernini-Timings"]))
            self.request_ids.append(response.headers["X-Request-Id"])  # Serve's; its access log lines carry it
            return response.read()


def compiled(work: Path) -> Path:
    """The reference model compiled for cpu: its artifacts directory."""
    artifacts = work / "artifacts"
    compile_model(artifacts, "1.0.0", "cpu", log=lambda _: None)
    return artifacts


@contextlib.contextmanager
def ray_head(work: Path):
    """A real Ray head whose session directory lies outside work (Ray's socket paths must stay short). Its 16
    logical CPUs hold both layouts' applications at the example's sizes."""
    head = RayHead(Path(tempfile.mkdtemp(prefix="bernini-ray-")), work / "ray.log", cpus=16)
    head.start()
    try:
        yield head
    finally:
        head.stop()


@contextlib.contextmanager
def serve_pipeline(work: Path, artifacts: Path, layouts: tuple[str, ...] = LAYOUTS):
    """The compiled model served by a real Ray head with the operator's rendered serveConfigV2 for
    examples/bernini-minimal.yaml, one application per layout (named and routed by it); yields a closed-loop
    request function per layout."""
    with ray_head(work) as head:
        configs = [rendered_serve_config(artifacts, head.serve_port, layout=layout) for layout in layouts]
        applications = [{**config["applications"][0], "name": layout, "route_prefix": f"/{layout}"}
                        for layout, config in zip(layouts, configs)]
        head.deploy_serve({**configs[0], "applications": applications})
        calls = {}
        for layout in layouts:
            head.wait_running(layout)
            calls[layout] = ServeCall(head, layout)
            for _ in range(3):
                calls[layout]()  # warm up every replica's first call
        yield calls


def replica_times(call: ServeCall, request_ids: set[str]) -> dict[str, list[float]]:
    """Milliseconds each of these requests spent inside each deployment's replica, from the replicas' access
    logs (the replica's own timing; Ray's exported latency histograms carry bucket midpoints, not sums)."""
    line = re.compile(rf" {call.application}_(\w+) \w+ (\S+) -- CALL \w+ OK ([\d.]+)ms$")
    expected = [DEPLOYMENT_NAMES[name] for name in deployments_of_layout(call.application) if name != "ingress"]

    def read() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {}
        logs = call.head.temp_dir / "session_latest" / "logs" / "serve"
        for log in logs.glob(f"replica_{call.application}_*.log"):
            for match in map(line.search, log.read_text(errors="replace").splitlines()):
                if match and match.group(2) in request_ids:
                    times.setdefault(match.group(1), []).append(float(match.group(3)))
        return times
    return wait_for(lambda: (seen := read()) and all(len(seen.get(name, ())) == len(request_ids) for name in expected)
                    and seen, "every replica to log these requests", timeout=30, interval=1)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ray_usage(head: RayHead) -> dict[str, tuple[float, int]]:
    """CPU seconds and minor page faults so far of each process the Ray head started, by name: ray::<actor>
    (replicas by deployment), the script a Python process runs, or the binary."""
    usage: dict[str, tuple[float, int]] = {}
    for pid in head.process_tree():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].startswith("ray::"):
            name = argv[0].removeprefix("ray::").removeprefix("ServeReplica:").split(".")[0].split()[0]
        else:  # a process title may be "name (original command line)"
            name = Path(next((arg for arg in argv if arg.endswith(".py")), argv[0].split(" (")[0])).name
        cpu, faults = usage.get(name, (0.0, 0))
        usage[name] = (cpu + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, faults + int(fields[7]))
    return usage


def stage_medians(timings: list[dict[str, float]]) -> dict[str, float]:
    return {stage: statistics.median(t[stage] for t in timings) for stage in timings[0]}


def interleaved(calls: dict, concurrency: int, args, results, usage: dict | None = None) -> dict[str, list[dict]]:
    """Blocks of requests, the paths alternating (drift on this machine hits all alike), added to results; if
    usage is given, adds what the Ray processes spent during each Serve path's blocks to usage[path]; returns
    the stage times recorded in these blocks, by path."""
    stage_times: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for path, call in calls.items():
            done = len(call.timings)
            counted = usage is not None and isinstance(call, ServeCall)
            before = ray_usage(call.head) if counted else {}
            latencies, throughput = measure(call, args.requests // args.rounds, concurrency)
            spent = usage.setdefault(path, {}) if counted else {}
            for name, (cpu, faults) in ray_usage(call.head).items() if counted else ():
                so_far = spent.get(name, (0.0, 0))
                start = before.get(name, (cpu, faults))  # a process started during the block counts from here
                spent[name] = (so_far[0] + cpu - start[0], so_far[1] + faults - start[1])
            sofar, rates = results.get((path, concurrency), ([], []))
            results[(path, concurrency)] = (sofar + latencies, rates + [throughput])
            stage_times.setdefault(path, []).extend(call.timings[done:])
    return stage_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40, help="per path and concurrency, over --rounds blocks")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per path, the paths alternating")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    artifacts = compiled(work)
    peer = InProcess(artifacts)
    reference = peer()  # warm up, and the mesh Serve must return for the same seed
    results: dict[tuple[str, int], tuple[list[float], list[float]]] = {}  # latencies, per-block throughputs
    with serve_pipeline(work, artifacts) as served:
        for layout, call in served.items():
            if call() != reference:
                raise SystemExit(f"Serve ({layout}) and the in-process graphs returned different meshes for one seed")
        calls = {"in-process": peer, **served}
        usage: dict[str, dict[str, tuple[float, int]]] = {}
        counted = {layout: len(call.request_ids) for layout, call in served.items()}
        peer_cpu = len(peer.cpu_seconds)
        stage_times = interleaved(calls, 1, args, results, usage)
        stage_cpu = statistics.mean(peer.cpu_seconds[peer_cpu:])
        inside = {layout: {name: statistics.median(times) for name, times in
                           replica_times(call, set(call.request_ids[counted[layout]:])).items()}
                  for layout, call in served.items()}
        interleaved(calls, 8, args, results)
    shutil.rmtree(work, ignore_errors=True)

    print(f"{args.requests} requests per path and concurrency in {args.rounds} interleaved blocks, text prompt -> "
          f"GLB mesh, cpu-compiled reference model, {os.cpu_count()} cores; the same mesh from every path for seed 0")
    print(f"{'path':<12} {'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for (path, concurrency), (latencies, rates) in results.items():
        print(f"{path:<12} {concurrency:>4} {statistics.median(latencies) * 1000:8.0f} "
              f"{percentile(latencies, 0.95) * 1000:8.0f} {statistics.median(rates):7.2f}")
    for layout in served:
        for concurrency in (1, 8):
            serve_p50 = statistics.median(results[(layout, concurrency)][0])
            local_p50 = statistics.median(results[("in-process", concurrency)][0])
            ratio = (statistics.median(results[(layout, concurrency)][1])
                     / statistics.median(results[("in-process", concurrency)][1]))
            print(f"{layout}, concurrency {concurrency}: Serve overhead p50 {(serve_p50 - local_p50) * 1000:+.0f} ms "
                  f"({(serve_p50 / local_p50 - 1) * 100:+.0f}%), throughput ratio serve/in-process {ratio:.2f}")
    # Where the overhead goes at concurrency 1: each stage alone in-process, inside its replica (as the replica
    # timed the call: the stage plus the replica's request handling), and as the ingress saw its handle call
    # (plus routing, arguments and result through Ray); the rest is HTTP, the proxy and the ingress itself.
    local = stage_medians(stage_times["in-process"])
    for layout in served:
        served_stages = stage_medians(stage_times[layout])
        print(f"{layout}, concurrency 1, per stage: in-process p50 / through the ingress p50, ms; "
              f"inside each replica p50, ms: " + ", ".join(f"{name} {ms:.1f}" for name, ms in inside[layout].items()))
        for stage in local:
            print(f"  {stage:<14} {local[stage] * 1000:7.1f} {served_stages[stage] * 1000:7.1f}")
        rest = statistics.median(results[(layout, 1)][0]) - sum(served_stages.values())
        print(f"  HTTP, proxy and ingress: {rest * 1000:.1f} ms")
    # On 2 cores what Ray's own processes burn competes with the stage computing at the time.
    print(f"concurrency 1, CPU per request: the stage work in-process {stage_cpu * 1000:.1f} ms; each Ray process "
          f"(CPU ms, minor page faults), all of them, and all of them beyond the stage work:")
    for layout, spent in usage.items():
        requests = len(stage_times[layout])
        print(f"  {layout}:")
        for name, (cpu, faults) in sorted(spent.items(), key=lambda item: -item[1][0]):
            if cpu * 1000 / requests >= 1:
                print(f"    {name:<32} {cpu * 1000 / requests:7.1f} {faults / requests:9.0f}")
        total = sum(cpu for cpu, _ in spent.values()) / requests
        print(f"    all Ray processes {total * 1000:.1f} ms; beyond the stage work {(total - stage_cpu) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
