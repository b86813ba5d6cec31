"""`bernini artifacts pull|verify`: compiled stage artifacts in S3. `pull` is the Ray pods' init container."""

import argparse
import gc
import json
import os
import sys
import threading
from pathlib import Path


def add_to(commands: argparse._SubParsersAction) -> None:
    artifacts = commands.add_parser("artifacts", help="compiled stage artifacts in S3")
    actions = artifacts.add_subparsers(dest="action", required=True)
    pull_parser = actions.add_parser("pull", help="download and verify an artifact set (the init container)")
    verify_parser = actions.add_parser("verify", help="check a remote artifact set from S3 metadata")
    for sub, handler in ((pull_parser, pull), (verify_parser, verify)):
        sub.add_argument("uri", help="s3://bucket/prefix/ holding manifest.json")
        if sub is pull_parser:
            sub.add_argument("dest", type=Path, help="local directory")
            sub.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"),
                             help="where a failure's message goes for the pod status (Kubernetes' default path)")
            sub.add_argument("--deadline-seconds", type=float, default=3600.0,
                             help="give up (exit 10) when the whole pull takes longer")
            sub.add_argument("--cache-dir", type=Path,
                             help="the node's artifact cache (shared by the pods of a node, keyed by SHA-256)")
            sub.add_argument("--cache-limit-gib", type=float, default=50.0,
                             help="evict least recently used cache entries beyond this (not the set in use)")
        sub.add_argument("--manifest-sha256", help="refuse a manifest.json with another digest")
        sub.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
        sub.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        sub.add_argument("--concurrency", type=int, default=16)
        # 16 MiB: half the requests of 8 MiB parts cut the store's work and ours (8% faster on a 4 GiB set).
        sub.add_argument("--part-size-mib", type=int, default=16)
        sub.set_defaults(handler=handler)


def _puller(args: argparse.Namespace):
    from bernini.artifacts.node_cache import NodeCache
    from bernini.artifacts.pull import Puller

    cache_dir = getattr(args, "cache_dir", None)
    cache = NodeCache(cache_dir, int(args.cache_limit_gib * 2**30)) if cache_dir else None
    return Puller(args.uri, getattr(args, "dest", None), region=args.region, endpoint_url=args.endpoint_url,
                  concurrency=args.concurrency, part_size=args.part_size_mib << 20,
                  deadline_seconds=getattr(args, "deadline_seconds", float("inf")), cache=cache)


def pull(args: argparse.Namespace) -> int:
    from bernini.artifacts.pull import PullError

    # The imports make most of this short-lived process's objects and none of them turn into garbage: the
    # collector's passes over them cost ~5% of a pull, so it is off while they load and kept off them after.
    gc.disable()
    puller = _puller(args)
    gc.freeze()
    gc.enable()
    done = threading.Event()
    progress = threading.Thread(target=_show_progress, args=(puller, done), daemon=True)
    if sys.stdout.isatty():
        progress.start()
    try:
        report = puller.pull(args.manifest_sha256)
    except PullError as error:
        message = f"bernini artifacts pull: {error}"
        print(message, file=sys.stderr)
        _write_termination_message(args.termination_log, message)
        return error.exit_code
    finally:
        done.set()
        if progress.is_alive():
            progress.join()
    print(f"pulled {report.files} files ({report.bytes / 2**20:.1f} MiB) in {report.seconds:.2f}s: "
          f"{report.mib_per_second:.0f} MiB/s, checksums verified; {report.skipped} already present and verified; "
          f"{report.cached_files} from the node cache ({report.cached_bytes / 2**20:.1f} MiB); first request "
          f"{_since_start(puller.first_request_at)} (credentials: {puller.credentials.source})")
    _write_termination_message(args.termination_log, json.dumps(report.summary()))
    return 0


def _since_start(moment: float) -> str:
    """How long after this process started a time.monotonic() moment came (to the kernel's 10 ms tick)."""
    import time

    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return "sent (no /proc to time it by)"
    started = time.monotonic() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot)
    return f"{moment - started:.2f}s after the process started"


def _show_progress(puller, done: threading.Event, width: int = 30) -> None:
    """A progress bar on the terminal while the pull runs, left at its last state (an init container's log
    gets none)."""
    import time

    started = time.monotonic()

    def draw() -> None:
        share = min(1.0, puller.landed / puller.expected)
        rate = puller.landed / 2**20 / max(time.monotonic() - started, 1e-3)
        print(f"\r[{'#' * round(share * width):<{width}}] {share:4.0%} {puller.landed / 2**20:,.0f}/"
              f"{puller.expected / 2**20:,.0f} MiB {rate:,.0f} MiB/s", end="\033[K", flush=True)

    while not done.wait(0.25):
        if puller.expected:
            draw()
    if puller.expected:
        draw()
        print(flush=True)


def _write_termination_message(path: Path, message: str) -> None:
    """The kubelet copies this file into the container's status: the operator reads a failure from there (log
    order is not a contract: parallel downloads may still print after the error), `bernini status` a success's
    byte counts. The kubelet creates the file; elsewhere it does not exist and nothing is written."""
    if path.is_file():
        path.write_text(message[:4096])


def verify(args: argparse.Namespace) -> int:
    from bernini.artifacts.pull import PullError
    from bernini.artifacts.verify import verify as verify_remote

    try:
        checked, findings = verify_remote(_puller(args), args.manifest_sha256)
    except PullError as error:
        print(f"bernini artifacts verify: {error}", file=sys.stderr)
        return error.exit_code
    for finding in findings:
        print(f"{finding.file}: {finding.problem}", file=sys.stderr)
    print(f"{checked} stage files checked against the manifest: {len(findings)} problems")
    return 1 if findings else 0
