"""make bench-pull: our artifact puller against the verified ceiling of this machine, s5cmd and aws-cli.

Every client ends with verified bytes. The ceiling for a verified copy is derived from its two halves measured
alone in the same rounds: s5cmd's download (D) and a SHA-256 pass on all cores (H), V = 1/(1/D + 1/H). CPU is the
whole machine's (/proc/stat), the S3 server's included. Then the same over a rate-limited path: a veth pair into a
network namespace this bench makes, its egress shaped by a token bucket, where the network is the bottleneck as on
a real node. Rounds interleave the clients, so drift hits everyone alike; figures are medians.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from bernini.artifacts.manifest import Manifest
from bernini.artifacts.publish import publish
from localdev.cluster import DEFAULT_BIN_DIR
from localdev.s3server import LocalS3

MiB = 1 << 20
AWSCLI_VERSION = "1.46.3"
CACHE = Path(os.environ.get("BERNINI_CACHE", Path.home() / ".cache" / "bernini"))
NETNS, HOST_SIDE, POD_SIDE = "bench-pull", "bpull0", "bpull1"
HOST_ADDRESS, POD_ADDRESS = "10.203.0.1", "10.203.0.2"  # a private /30 only this bench's namespace uses
REPO = Path(__file__).resolve().parents[2]
FIRST_REQUEST = re.compile(r"first request (\d+\.\d+)s after the process started")


def peer_venv(package: str, version: str) -> Path:
    """A venv of the peer's own, cached: awscli pins botocore exactly and would fight boto3 in ours."""
    venv = CACHE / f"{package}-{version}"
    if not (venv / "installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{package}=={version}"], check=True)
        (venv / "installed").touch()
    return venv / "bin"


def make_dataset(directory: Path, big: int, big_mib: int, small: int, small_kib: int) -> Manifest:
    directory.mkdir(parents=True)
    stages = {}
    sizes = {f"big-{i}.bin": big_mib * MiB for i in range(big)}
    sizes |= {f"small/{i:04d}.bin": small_kib * 1024 for i in range(small)}
    for name, size in sizes.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        stages[name] = {"stage": "bench", "file": name, "sha256": hashlib.sha256(data).hexdigest(), "size": size}
    return Manifest.model_validate({"manifestVersion": 1, "model": {"name": "bench", "version": "1"}, "target": "cpu",
                                    "toolchain": {"torch": "none"}, "stages": stages})


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Sample:
    def __init__(self):
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.first_request: list[float] = []

    def median(self) -> float:
        return statistics.median(self.seconds)


def hash_pass(dest: Path, manifest: Manifest) -> None:
    """Every file's SHA-256 on all cores (hashlib releases the GIL), checked against the manifest."""
    def check(artifact):
        with (dest / artifact.file).open("rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != artifact.sha256:
                raise SystemExit(f"{artifact.file}: checksum mismatch")
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(check, sorted(manifest.stages.values(), key=lambda a: -a.size)))


def measure(sample: Sample, action) -> str:
    cpu, started = busy_seconds(), time.monotonic()
    output = action()
    sample.seconds.append(time.monotonic() - started)
    sample.cpu.append(busy_seconds() - cpu)
    if found := FIRST_REQUEST.search(output or ""):
        sample.first_request.append(float(found.group(1)))
    return output


def run(command: list[str], env: dict, netns: bool = False) -> str:
    if netns:
        command = ["ip", "netns", "exec", NETNS, *command]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command} failed: {result.stderr[-2000:]}")
    return result.stdout


def fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@contextlib.contextmanager
def shaped_namespace(gbit: float):
    """A network namespace reached over a veth pair whose host side sends at most gbit (a token bucket)."""
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True)
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    subprocess.run(["ip", "link", "del", HOST_SIDE], capture_output=True)
    ip("netns", "add", NETNS)
    try:
        ip("link", "add", HOST_SIDE, "type", "veth", "peer", "name", POD_SIDE)
        ip("link", "set", POD_SIDE, "netns", NETNS)
        ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_SIDE)
        ip("link", "set", HOST_SIDE, "up")
        ip("netns", "exec", NETNS, "ip", "addr", "add", f"{POD_ADDRESS}/30", "dev", POD_SIDE)
        ip("netns", "exec", NETNS, "ip", "link", "set", POD_SIDE, "up")
        ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        subprocess.run(["tc", "qdisc", "add", "dev", HOST_SIDE, "root", "tbf", "rate", f"{gbit}gbit",
                        "burst", "512kb", "latency", "50ms"], check=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", HOST_SIDE], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def peer_checkout(ref: str, work: Path) -> Path:
    """Our puller as it was at ref, run from a worktree (a peer measured in the same run)."""
    tree = work / f"peer-{ref}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "operator" / "bernini")], check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=8)
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--small", type=int, default=48)  # with the 8 big ones, near the 64 files a manifest may list
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate-gbit", type=float, default=4.0, help="the rate-limited path (0: skip it)")
    parser.add_argument("--peer-ref", help="also run our puller as it was at this git revision")
    args = parser.parse_args()

    aws = peer_venv("awscli", AWSCLI_VERSION) / "aws"
    s5cmd = DEFAULT_BIN_DIR / "s5cmd"
    # As the image installs it: byte-compiled (this environment may forbid writing bytecode on import).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "operator" / "bernini")], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    # Destinations and the node cache in RAM: we measure clients and the server, not this machine's virtual disk.
    ram = Path(tempfile.mkdtemp(prefix="bench-pull-", dir="/dev/shm"))
    dest, cache = ram / "dest", ram / "node-cache"
    namespace = shaped_namespace(args.rate_gbit) if args.rate_gbit else contextlib.nullcontext()
    server = LocalS3(work / "s3", work / "versitygw.log", tied_to_parent=True,
                     host=HOST_ADDRESS if args.rate_gbit else "127.0.0.1")
    peer = peer_checkout(args.peer_ref, work) if args.peer_ref else None
    try:
        with namespace:
            server.start()
            manifest = make_dataset(work / "data", args.big, args.big_mib, args.small, args.small_kib)
            s3 = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                              aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
            s3.create_bucket(Bucket="bench")
            publish(s3, "s3://bench/set/", work / "data", manifest)
            env = {**os.environ, **server.credentials_env, "AWS_REGION": "us-east-1",
                   "AWS_DEFAULT_REGION": "us-east-1"}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            peer_env = {**env, "PYTHONPATH": str(peer / "operator")} if peer else None
            endpoint = ["--endpoint-url", server.endpoint_url]

            def ours(cached: bool = False, environment: dict = env, netns: bool = False):
                extra = ["--cache-dir", str(cache)] if cached else []
                return lambda: run([sys.executable, "-m", "bernini", "artifacts", "pull", "s3://bench/set/",
                                    str(fresh(dest)), *endpoint, *extra], environment, netns)

            def s5cmd_download(netns: bool = False):
                return lambda: run([str(s5cmd), *endpoint, "cp", "s3://bench/set/*", f"{fresh(dest)}/"], env, netns)

            def aws_cli_then_hash() -> None:
                run([str(aws), "s3", "cp", "--recursive", "--only-show-errors", "s3://bench/set/", str(fresh(dest)),
                     *endpoint], env)
                hash_pass(dest, manifest)

            def copy_then_hash() -> None:
                shutil.copytree(cache / "sha256", fresh(dest) / "copy")
                hash_pass_flat(dest / "copy")

            ours(cached=True)()  # fills the node cache the cache-hit rows read
            rows = {name: Sample() for name in ("ours", "s5cmd", "hash", "aws-cli", "ours-cached", "copy", "peer",
                                                "peer-cached", "shaped-ours", "shaped-s5cmd", "shaped-hash")}
            for number in range(args.runs + 1):
                if number == 1:  # the first round warms the server's page cache and every client's: not counted
                    rows = {name: Sample() for name in rows}
                measure(rows["ours"], ours())
                measure(rows["s5cmd"], s5cmd_download())
                measure(rows["hash"], lambda: hash_pass(dest, manifest))
                measure(rows["aws-cli"], aws_cli_then_hash)
                measure(rows["ours-cached"], ours(cached=True))
                measure(rows["copy"], copy_then_hash)
                if peer:
                    measure(rows["peer"], ours(environment=peer_env))
                    measure(rows["peer-cached"], ours(cached=True, environment=peer_env))
                if args.rate_gbit:
                    measure(rows["shaped-ours"], ours(netns=True))
                    measure(rows["shaped-s5cmd"], s5cmd_download(netns=True))
                    measure(rows["shaped-hash"], lambda: hash_pass(dest, manifest))
            report(args, manifest, rows, peer is not None)
    finally:
        server.stop()
        if peer:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(peer)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ram, ignore_errors=True)


def hash_pass_flat(directory: Path) -> None:
    """The cache's entries hashed on all cores, each checked against its own name (its SHA-256)."""
    def check(path: Path) -> None:
        with path.open("rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != path.name:
                raise SystemExit(f"{path}: checksum mismatch")
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(check, sorted(directory.iterdir(), key=lambda p: -p.stat().st_size)))


def report(args, manifest: Manifest, rows: dict[str, Sample], with_peer: bool) -> None:
    total = manifest.total_bytes / MiB
    median = {name: row.median() for name, row in rows.items() if row.seconds}
    cpu = {name: statistics.median(row.cpu) for name, row in rows.items() if row.cpu}
    verified_ceiling = median["s5cmd"] + median["hash"]  # 1/V = 1/D + 1/H, as times
    print(f"dataset: {args.big} x {args.big_mib} MiB + {args.small} x {args.small_kib} KiB = {total:.0f} MiB; "
          f"median of {args.runs} rounds after one uncounted; destination and node cache on tmpfs; "
          f"{os.cpu_count()} cores")
    lines = [("ours", "bernini artifacts pull (sha256 while streaming)"),
             ("s5cmd", "D: s5cmd cp v2.3.0, download alone"),
             ("hash", f"H: sha256 pass alone, {os.cpu_count()} threads"),
             ("aws-cli", f"aws s3 cp --recursive {AWSCLI_VERSION} + sha256 pass"),
             ("ours-cached", "bernini artifacts pull, every file from the node cache"),
             ("copy", "copy of the node cache's files (sendfile) + sha256 pass")]
    if with_peer:
        lines += [("peer", f"bernini at {args.peer_ref}"), ("peer-cached", f"bernini at {args.peer_ref}, node cache")]
    if args.rate_gbit:
        lines += [("shaped-ours", f"over {args.rate_gbit:g} Gbit/s: bernini artifacts pull"),
                  ("shaped-s5cmd", f"over {args.rate_gbit:g} Gbit/s: s5cmd download alone"),
                  ("shaped-hash", f"over {args.rate_gbit:g} Gbit/s: then the sha256 pass")]
    print(f"  {'client':<58} {'MiB/s':>7} {'median s':>9} {'CPU s':>6}   runs")
    for name, label in lines:
        runs = ", ".join(f"{s:.2f}" for s in rows[name].seconds)
        print(f"  {label:<58} {total / median[name]:7.0f} {median[name]:9.2f} {cpu[name]:6.1f}   {runs}")
    print(f"  {'V: verified ceiling, 1/(1/D + 1/H)':<58} {total / verified_ceiling:7.0f} {verified_ceiling:9.2f}")
    first = statistics.median(rows["ours"].first_request)
    ratios = {
        "ours / V (= ours / (s5cmd, then hash))": verified_ceiling / median["ours"],
        "ours / aws-cli": median["aws-cli"] / median["ours"],
        "node-cache hit: ours / (cp + hash)": median["copy"] / median["ours-cached"],
    }
    if with_peer:
        ratios["ours / peer"] = median["peer"] / median["ours"]
        ratios["node-cache hit: ours / peer"] = median["peer-cached"] / median["ours-cached"]
    if args.rate_gbit:
        ratios[f"{args.rate_gbit:g} Gbit/s: ours / (s5cmd + hash)"] = (
            (median["shaped-s5cmd"] + median["shaped-hash"]) / median["shaped-ours"])
    for name, value in ratios.items():
        print(f"ratio {name + ':':<40} {value:.2f}")
    print(f"first request after the process started: {first:.2f} s (median; the kernel's clock tick is 10 ms)")
    print(json.dumps({"mib_per_second": {name: round(total / seconds) for name, seconds in median.items()},
                      "ratios": {name: round(value, 3) for name, value in ratios.items()},
                      "first_request_seconds": first}))


if __name__ == "__main__":
    main()
