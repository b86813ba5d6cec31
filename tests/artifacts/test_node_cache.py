"""The node's artifact cache, with the real puller CLI against the real S3-compatible server (versitygw): each
pull is its own process, as each worker pod's init container is, and the cache is one directory they share."""

import os
import subprocess
import sys
from pathlib import Path

from bernini.artifacts.publish import publish
from tests.artifacts.conftest import MiB, SIZES, write_set


def _pull(local_s3, uri: str, dest: Path, cache: Path, limit_gib: float = 50) -> subprocess.Popen:
    command = [sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(dest), "--endpoint-url",
               local_s3.endpoint_url, "--part-size-mib", "1", "--cache-dir", str(cache), "--cache-limit-gib", str(limit_gib)]
    return subprocess.Popen(command, env={**os.environ, **local_s3.credentials_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finished(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return stdout.splitlines()[-1]


def _same_as_published(dest: Path, compiled: Path, manifest) -> bool:
    return all((dest / a.file).read_bytes() == (compiled / a.file).read_bytes() for a in manifest.stages.values())


def test_pods_starting_together_on_a_node_download_each_file_once(published, local_s3, tmp_path):
    uri, manifest = published
    cache = tmp_path / "node-cache"
    first, second = (_pull(local_s3, uri, tmp_path / name, cache) for name in ("pod-a", "pod-b"))
    summaries = sorted([_finished(first), _finished(second)])
    total = sum(SIZES.values()) / MiB
    # One downloaded everything; the other waited on the cache's locks and copied the verified files.
    assert summaries[0].startswith("pulled 0 files (0.0 MiB)"), summaries
    assert summaries[0].endswith(f"3 from the node cache ({total:.1f} MiB)"), summaries
    assert summaries[1].startswith(f"pulled 3 files ({total:.1f} MiB)"), summaries
    assert summaries[1].endswith("0 from the node cache (0.0 MiB)"), summaries
    for pod in ("pod-a", "pod-b"):
        assert _same_as_published(tmp_path / pod, tmp_path / "compiled", manifest)
    assert sorted(p.name for p in (cache / "sha256").iterdir()) == sorted(a.sha256 for a in manifest.stages.values())


def test_a_corrupt_cache_entry_is_found_and_pulled_again(published, local_s3, tmp_path):
    uri, manifest = published
    cache = tmp_path / "node-cache"
    _finished(_pull(local_s3, uri, tmp_path / "first", cache))
    entry = cache / "sha256" / manifest.stages["diffusion"].sha256
    with entry.open("r+b") as handle:  # a flipped byte: the size still matches
        handle.seek(MiB)
        byte = handle.read(1)
        handle.seek(MiB)
        handle.write(bytes([byte[0] ^ 0xFF]))
    process = _pull(local_s3, uri, tmp_path / "second", cache)
    summary = _finished(process)
    assert summary.startswith(f"pulled 1 files ({SIZES['diffusion'] / MiB:.1f} MiB)"), summary
    assert summary.endswith("2 from the node cache (3.0 MiB)"), summary
    assert _same_as_published(tmp_path / "second", tmp_path / "compiled", manifest)
    assert entry.read_bytes() == (tmp_path / "compiled" / "diffusion.pt").read_bytes()  # healed


def test_eviction_keeps_the_cache_to_its_limit_but_never_the_set_in_use(published, s3, local_s3, tmp_path):
    uri, first_set = published
    cache = tmp_path / "node-cache"
    limit = 1 / 1024  # 1 MiB: less than either set
    _finished(_pull(local_s3, uri, tmp_path / "v1", cache, limit))
    assert {p.name for p in (cache / "sha256").iterdir()} == {a.sha256 for a in first_set.stages.values()}

    second_uri = uri.rstrip("/") + "-v2/"
    second_set = write_set(tmp_path / "compiled-v2", SIZES, version="1.1.0")
    publish(s3, second_uri, tmp_path / "compiled-v2", second_set)
    _finished(_pull(local_s3, second_uri, tmp_path / "v2", cache, limit))
    # The old version's entries went (oldest first) to bring the cache toward its limit; the new set stays whole.
    assert {p.name for p in (cache / "sha256").iterdir()} == {a.sha256 for a in second_set.stages.values()}
    assert _same_as_published(tmp_path / "v2", tmp_path / "compiled-v2", second_set)
