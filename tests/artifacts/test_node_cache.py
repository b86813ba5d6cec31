"""The node's artifact cache, with the real puller CLI against the real S3-compatible server (versitygw): each
pull is its own process, as each worker pod's init container is, and the cache is one directory they share.

Then the cache against the pods it is shared with, any of which may be hostile: a neighbour is a real process of its
own where timing matters (rewriting an entry while it is copied or after, evicting at the same time); what it leaves
behind (a FIFO, a directory, a symlink, a full disk) is put there as a neighbour would leave it."""

import contextlib
import hashlib
import multiprocessing
import os
import subprocess
import sys
import time
import types
import urllib.parse
from pathlib import Path

import pytest

from bernini.artifacts import node_cache
from bernini.artifacts.manifest import StageArtifact
from bernini.artifacts.manifest_files import FileEntry
from bernini.artifacts.node_cache import NodeCache
from bernini.artifacts.pull import _on_every_core
from bernini.artifacts.publish import publish
from localdev.waiting import wait_for
from tests.artifacts.conftest import MiB, SIZES, write_set
from tests.tcp_gate import GatedForwarder


def _pull(local_s3, uri: str, dest: Path, cache: Path, limit_gib: float = 50,
          deadline: float = 3600, endpoint_url: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(dest), "--endpoint-url",
               endpoint_url or local_s3.endpoint_url, "--part-size-mib", "1", "--cache-dir", str(cache), "--cache-limit-gib", str(limit_gib),
               "--deadline-seconds", str(deadline)]
    return subprocess.Popen(command, env={**os.environ, **local_s3.credentials_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _output(process: subprocess.Popen, timeout: float = 120) -> str:
    """What a pull that succeeded printed."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()  # a hung pull must not outlive its test
    assert process.returncode == 0, stderr
    return stdout


def _finished(process: subprocess.Popen, timeout: float = 120) -> str:
    return _output(process, timeout).splitlines()[-1]


def _same_as_published(dest: Path, compiled: Path, manifest) -> bool:
    return all((dest / a.file).read_bytes() == (compiled / a.file).read_bytes() for a in manifest.stages.values())


def test_pods_starting_together_on_a_node_download_each_file_once(published, local_s3, tmp_path):
    """Both pulls are held at the store (a gate) until both have dialled it: they truly overlap."""
    uri, manifest = published
    cache = tmp_path / "node-cache"
    store = urllib.parse.urlsplit(local_s3.endpoint_url)
    gate = GatedForwarder((store.hostname, store.port))
    try:
        first, second = (_pull(local_s3, uri, tmp_path / name, cache, endpoint_url=f"http://127.0.0.1:{gate.port}")
                         for name in ("pod-a", "pod-b"))
        wait_for(lambda: {first.pid, second.pid} <= set(gate.dialers), "both pulls to dial the store", timeout=60)
        gate.opened.set()
        summaries = sorted([_finished(first), _finished(second)])
    finally:
        gate.close()
    summaries = sorted([_finished(first), _finished(second)])
    total = sum(SIZES.values()) / MiB
    # One downloaded everything; the other waited on the cache's locks and copied the verified files.
    assert summaries[0].startswith("pulled 0 files (0.0 MiB)"), summaries
    assert f"3 from the node cache ({total:.1f} MiB);" in summaries[0], summaries
    assert summaries[1].startswith(f"pulled 3 files ({total:.1f} MiB)"), summaries
    assert "0 from the node cache (0.0 MiB);" in summaries[1], summaries
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
    assert "2 from the node cache (3.0 MiB);" in summary, summary
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


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs of the given size (it fills for real: ENOSPC)."""
    mounts = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{size}"
        path.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, text=True)
        assert mounted.returncode == 0, f"this test needs root to mount a small tmpfs: {mounted.stderr}"
        mounts.append(path)
        return path
    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=True)


def test_a_fifo_at_a_lock_path_does_not_hang_the_pull(published, local_s3, tmp_path):
    """Opening a FIFO for writing waits for a reader for ever, deadline or not: the lock path is opened without
    waiting, found not to be a file, and made one."""
    uri, manifest = published
    cache = tmp_path / "node-cache"
    (cache / "locks").mkdir(parents=True)
    lock = cache / "locks" / manifest.stages["diffusion"].sha256
    os.mkfifo(lock)
    summary = _finished(_pull(local_s3, uri, tmp_path / "pod", cache, deadline=20), timeout=40)
    assert summary.startswith(f"pulled 3 files ({sum(SIZES.values()) / MiB:.1f} MiB)"), summary
    assert _same_as_published(tmp_path / "pod", tmp_path / "compiled", manifest)
    assert lock.is_file() and not lock.is_symlink()


def test_a_full_cache_does_not_fail_a_pull_that_has_its_files(published, local_s3, tmp_path, tmpfs):
    """Keeping is best effort: the files that fit are kept, the rest are logged, and no temporary file stays."""
    uri, manifest = published
    cache = tmpfs("2m")  # the 1-byte decoder fits; the 3 MiB encoder and 20 MiB diffusion files do not
    output = _output(_pull(local_s3, uri, tmp_path / "pod", cache))
    assert _same_as_published(tmp_path / "pod", tmp_path / "compiled", manifest)
    for stage in ("encoder", "diffusion"):
        assert f"not keeping {stage}.pt" in output and "No space left on device" in output, output
    assert sorted(p.name for p in (cache / "sha256").iterdir()) == [manifest.stages["decoder"].sha256]


def _artifact(data: bytes) -> StageArtifact:
    return StageArtifact.model_validate({"stage": "encoder", "file": "encoder.pt", "size": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()})


def _cache_holding(tmp_path: Path, data: bytes, limit_bytes: int = 50 << 30) -> tuple[NodeCache, StageArtifact, list]:
    """A node cache with data as its one entry, kept as a pull keeps what it verified; and its log."""
    log = []
    cache = NodeCache(tmp_path / "node-cache", limit_bytes, log=log.append)
    artifact = _artifact(data)
    verified = tmp_path / "pulled" / artifact.file
    verified.parent.mkdir()
    verified.write_bytes(data)
    cache.keep(artifact, verified)
    return cache, artifact, log


def _entry(tmp_path: Path, artifact: StageArtifact) -> Path:
    return tmp_path / "node-cache" / "sha256" / artifact.sha256


def _rewrite_in_place(path: Path) -> None:
    """The neighbour: other bytes of the same size in the same file, so only a digest can tell."""
    with path.open("r+b") as handle:
        handle.write(os.urandom(path.stat().st_size))


def _rewrite_when_told(path: Path, go, done) -> None:
    if go.wait(30):
        _rewrite_in_place(path)
        done.set()


def _neighbour(target, *args) -> multiprocessing.Process:
    process = multiprocessing.Process(target=target, args=args, daemon=True)
    process.start()
    return process


class _Sha256LettingTheNeighbourWrite:
    """SHA-256 as node_cache computes it, except that once it has hashed its first block it lets the neighbour
    rewrite the entry and waits for it: the race between hashing the entry and placing it, every time."""

    def __init__(self, hashed, rewritten):
        self._digest, self._hashed, self._rewritten = hashlib.sha256(), hashed, rewritten

    def update(self, data) -> None:
        self._digest.update(data)
        if not self._hashed.is_set():
            self._hashed.set()
            self._rewritten.wait(30)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def test_a_neighbour_rewriting_an_entry_once_it_is_hashed_never_reaches_the_pod(tmp_path, monkeypatch):
    data = os.urandom(MiB)  # one block: hashed whole before the neighbour writes
    cache, artifact, _ = _cache_holding(tmp_path, data)
    hashed, rewritten = multiprocessing.Event(), multiprocessing.Event()
    neighbour = _neighbour(_rewrite_when_told, _entry(tmp_path, artifact), hashed, rewritten)
    monkeypatch.setattr(node_cache, "hashlib", types.SimpleNamespace(
        sha256=lambda: _Sha256LettingTheNeighbourWrite(hashed, rewritten)))
    target = tmp_path / "pod" / artifact.file
    taken = cache.take(artifact, target)
    neighbour.join(30)
    assert rewritten.is_set(), "the neighbour never wrote: the race did not happen"
    # The pod holds the bytes that were hashed (they were copied before the neighbour wrote), or nothing.
    assert (target.read_bytes() if target.exists() else None) == (data if taken else None)


def test_a_neighbour_writing_an_entry_later_cannot_reach_the_pods_copy(tmp_path):
    """A copy, not a hard link: the pod's file shares no inode the cache's other users can write."""
    data = os.urandom(MiB)
    cache, artifact, _ = _cache_holding(tmp_path, data)
    target = tmp_path / "pod" / artifact.file
    assert cache.take(artifact, target)
    neighbour = _neighbour(_rewrite_in_place, _entry(tmp_path, artifact))
    neighbour.join(30)
    assert neighbour.exitcode == 0 and _entry(tmp_path, artifact).read_bytes() != data
    assert target.read_bytes() == data


def test_a_symlink_at_an_entry_is_removed_never_followed(tmp_path):
    """Even to a file with the right bytes: the cache reads and touches nothing outside itself."""
    data = os.urandom(4096)
    log = []
    cache, artifact = NodeCache(tmp_path / "node-cache", 50 << 30, log=log.append), _artifact(data)
    elsewhere = tmp_path / "elsewhere" / "a-file-of-the-pod"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(data)
    os.utime(elsewhere, (1_000_000_000, 1_000_000_000))
    _entry(tmp_path, artifact).symlink_to(elsewhere)
    target = tmp_path / "pod" / artifact.file
    assert not cache.take(artifact, target)
    assert not target.exists() and not _entry(tmp_path, artifact).is_symlink()
    assert elsewhere.stat().st_mtime == 1_000_000_000 and elsewhere.read_bytes() == data
    assert any("removed a symlink found at the entry" in line for line in log), log


def test_a_symlink_at_a_lock_path_is_removed_never_followed(tmp_path):
    """Opening a lock through a link would create (or lock) any file the pod may write."""
    log = []
    cache, digest = NodeCache(tmp_path / "node-cache", 50 << 30, log=log.append), "ab" * 32
    bait = tmp_path / "pod" / "created-through-the-lock"
    bait.parent.mkdir()
    lock = tmp_path / "node-cache" / "locks" / digest
    lock.symlink_to(bait)
    with cache.holding([digest], time.monotonic() + 5):
        assert not bait.exists()
        assert lock.is_file() and not lock.is_symlink()
    assert any("removed a symlink found at the lock" in line for line in log), log


def test_a_symlink_in_place_of_the_entries_directory_is_replaced_never_followed(tmp_path):
    """Eviction deletes what it finds among the entries: through a link, that would be the pod's own files."""
    pods_files = tmp_path / "pod"
    pods_files.mkdir()
    (pods_files / "encoder.pt").write_bytes(bytes(MiB))
    (tmp_path / "node-cache").mkdir()
    (tmp_path / "node-cache" / "sha256").symlink_to(pods_files)
    log = []
    NodeCache(tmp_path / "node-cache", 0, log=log.append).evict(set())
    assert (pods_files / "encoder.pt").exists()
    assert (tmp_path / "node-cache" / "sha256").is_dir() and not (tmp_path / "node-cache" / "sha256").is_symlink()
    assert any("is not a directory; replacing it" in line for line in log), log


def test_a_directory_at_an_entry_is_a_miss_and_keeping_over_it_fails_softly(tmp_path):
    data = os.urandom(4096)
    log = []
    cache, artifact = NodeCache(tmp_path / "node-cache", 50 << 30, log=log.append), _artifact(data)
    entry = _entry(tmp_path, artifact)
    entry.mkdir()
    (entry / "inside").write_bytes(b"not empty, so it cannot be removed")
    assert not cache.take(artifact, tmp_path / "pod" / artifact.file)
    verified = tmp_path / "pulled" / artifact.file
    verified.parent.mkdir()
    verified.write_bytes(data)
    cache.keep(artifact, verified)
    assert entry.is_dir() and not list(entry.parent.glob("*.partial"))
    assert any("a directory at the entry" in line for line in log), log
    assert any(line.startswith("node cache: not keeping encoder.pt") for line in log), log


def test_eviction_counts_temporary_files_and_removes_stale_ones(tmp_path):
    """A temporary file whose writer died takes room for ever unless eviction counts and removes it; one being
    written counts, and stays."""
    cache, artifact, _ = _cache_holding(tmp_path, os.urandom(MiB), limit_bytes=MiB)
    entries = tmp_path / "node-cache" / "sha256"
    stale, live = entries / f"{'a' * 64}.partial", entries / f"{'b' * 64}.0123abcd.partial"
    stale.write_bytes(bytes(4 * MiB))
    a_day_ago = time.time() - 86400
    os.utime(stale, (a_day_ago, a_day_ago))
    live.write_bytes(bytes(MiB // 2))
    # 5.5 MiB against a 1 MiB limit: the stale file goes, then the entry; what is being written stays.
    assert cache.evict(set()) == 5 * MiB
    assert not stale.exists() and not _entry(tmp_path, artifact).exists() and live.exists()


def _evict_pausing_after_listing(root: Path, listed, other_evicted, outcomes) -> None:
    """One eviction (its own process) that, once it has listed the entries, waits until the other one deleted them:
    os.scandir and os.listdir, whichever the cache lists with, pause after their first listing."""
    def pause():
        if not listed.is_set():
            listed.set()
            other_evicted.wait(30)

    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(*args):
        with real_scandir(*args) as listing:
            found = list(listing)
        pause()
        return contextlib.nullcontext(found)

    def listdir(*args):
        found = real_listdir(*args)
        pause()
        return found

    os.scandir, os.listdir = scandir, listdir
    _evict(root, outcomes)


def _evict_when_told(root: Path, go, done, outcomes) -> None:
    go.wait(30)
    _evict(root, outcomes)
    done.set()


def _evict(root: Path, outcomes) -> None:
    try:
        outcomes.put(("freed", NodeCache(root, 0).evict(set())))
    except Exception as error:  # reported to the test, which names it
        outcomes.put(("raised", repr(error)))


def test_two_evictions_racing_in_two_processes_both_finish(tmp_path):
    """Two pulls on one node finishing together evict together: what one deletes between the other's listing and
    its deleting is no error (the pull already has its files), and every byte is freed once."""
    sizes = [MiB, 2 * MiB, 3 * MiB]
    cache = NodeCache(tmp_path / "node-cache", 50 << 30, log=lambda _: None)
    for size in sizes:
        verified = tmp_path / "pulled" / str(size)
        verified.parent.mkdir(exist_ok=True)
        verified.write_bytes(os.urandom(size))
        cache.keep(_artifact(verified.read_bytes()), verified)
    listed, evicted, outcomes = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Queue()
    evictions = [_neighbour(_evict_pausing_after_listing, tmp_path / "node-cache", listed, evicted, outcomes),
                 _neighbour(_evict_when_told, tmp_path / "node-cache", listed, evicted, outcomes)]
    results = [outcomes.get(timeout=60) for _ in evictions]
    for eviction in evictions:
        eviction.join(30)
    assert all(kind == "freed" for kind, _ in results), results
    assert sorted(freed for _, freed in results) == [0, sum(sizes)]
    assert not list((tmp_path / "node-cache" / "sha256").iterdir())


def test_files_are_checked_on_every_core_largest_first_and_answered_in_order(monkeypatch):
    """Node-cache hits and files a restarted pull finds are hashed on as many threads as cores (here forced to 2)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    pairs = [(FileEntry(str(i), "0" * 64, size), Path(str(i))) for i, size in enumerate([1, 3, 2])]
    started = []

    def check(artifact, _target):
        started.append(artifact.size)
        time.sleep(0.3)
        return artifact.file
    began = time.monotonic()
    assert _on_every_core(check, pairs) == ["0", "1", "2"]
    took = time.monotonic() - began
    assert sorted(started[:2]) == [2, 3] and took < 0.75, (started, took)  # two at once: 0.6 s, not 0.9 s
