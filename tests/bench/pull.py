"""make bench-pull: our artifact puller against the AWS CRT, aws-cli and s5cmd, same data, same local S3 server.

Every client ends with verified bytes: ours and the CRT hash while streaming; for aws-cli and s5cmd the SHA-256
check of the downloaded files (2 threads, one per core) is added to their time. Medians of --runs.
"""

import argparse
import hashlib
import json
import os
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
AWSCRT_VERSION = "0.38.1"
CACHE = Path(os.environ.get("BERNINI_CACHE", Path.home() / ".cache" / "bernini"))


def peer_venv(package: str, version: str) -> Path:
    """A venv of the peer's own, cached: awscli pins botocore exactly and would fight boto3 in ours, and the
    awscrt peer should start like a lean init container, without our imports."""
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


def verify_tree(dest: Path, manifest: Manifest) -> None:
    def check(artifact):
        with (dest / artifact.file).open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != artifact.sha256:
            raise SystemExit(f"{artifact.file}: checksum mismatch")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(check, manifest.stages.values()))


def timed(command: list[str], env: dict, dest: Path, manifest: Manifest | None) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {result.stderr[-2000:]}")
    if manifest is not None:
        verify_tree(dest, manifest)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=4)
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    aws = peer_venv("awscli", AWSCLI_VERSION) / "aws"
    crt_python = peer_venv("awscrt", AWSCRT_VERSION) / "python"
    s5cmd = DEFAULT_BIN_DIR / "s5cmd"
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    # Destinations in RAM: we measure clients and the server, not this machine's virtual disk.
    ram = Path(tempfile.mkdtemp(prefix="bench-pull-", dir="/dev/shm"))
    server = LocalS3(work / "s3", work / "versitygw.log", tied_to_parent=True)
    try:
        server.start()
        manifest = make_dataset(work / "data", args.big, args.big_mib, args.small, args.small_kib)
        total = manifest.total_bytes
        s3 = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
        s3.create_bucket(Bucket="bench")
        publish(s3, "s3://bench/set/", work / "data", manifest)
        env = {**os.environ, **server.credentials_env, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
        dest = ram / "dest"
        clients = {
            "bernini": ([sys.executable, "-m", "bernini", "artifacts", "pull", "s3://bench/set/", str(dest),
                         "--endpoint-url", server.endpoint_url], None),
            "awscrt": ([str(crt_python), str(Path(__file__).with_name("awscrt_get.py")), server.endpoint_url, "bench",
                        "set/", str(dest)], None),
            "aws-cli": ([str(aws), "s3", "cp", "--recursive", "--only-show-errors", "s3://bench/set/", str(dest),
                         "--endpoint-url", server.endpoint_url], manifest),
            "s5cmd": ([str(s5cmd), "--endpoint-url", server.endpoint_url, "cp", "s3://bench/set/*", f"{dest}/"], manifest),
            "ceiling": ([str(s5cmd), "--numworkers", "64", "--endpoint-url", server.endpoint_url, "cp",
                         "--concurrency", "16", "s3://bench/set/*", f"{dest}/"], None),
        }
        seconds: dict[str, list[float]] = {name: [] for name in clients}
        for run in range(args.runs):
            for name, (command, verify) in clients.items():  # interleaved, so drift hits everyone alike
                seconds[name].append(timed(command, env, dest, verify))
        rates = {name: total / MiB / statistics.median(values) for name, values in seconds.items()}
        print(f"dataset: {args.big} x {args.big_mib} MiB + {args.small} x {args.small_kib} KiB = {total / MiB:.0f} MiB; "
              f"median of {args.runs} runs; destination tmpfs")
        for name, label in (("bernini", "bernini artifacts pull (sha256 while streaming)"),
                            ("awscrt", f"awscrt {AWSCRT_VERSION} S3Client (sha256 checked in C while streaming)"),
                            ("aws-cli", f"aws s3 cp --recursive {AWSCLI_VERSION} + sha256 check"),
                            ("s5cmd", "s5cmd cp v2.3.0 + sha256 check"),
                            ("ceiling", "server ceiling: s5cmd 64 workers x 16 parts, no verification")):
            print(f"  {label:<62} {rates[name]:8.0f} MiB/s   (runs: {', '.join(f'{s:.2f}s' for s in seconds[name])})")
        print(f"ratio bernini / s5cmd:   {rates['bernini'] / rates['s5cmd']:.2f}")
        print(f"ratio bernini / awscrt:  {rates['bernini'] / rates['awscrt']:.2f}")
        print(f"ratio bernini / aws-cli: {rates['bernini'] / rates['aws-cli']:.2f}")
        print(json.dumps({name: round(rate) for name, rate in rates.items()}))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ram, ignore_errors=True)


if __name__ == "__main__":
    main()
