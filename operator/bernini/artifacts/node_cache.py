"""The node's artifact cache: files shared by the worker pods of one node, named by their SHA-256
(<root>/sha256/<hex>), so a node downloads a file once however many pods and versions use it.

- Every use re-hashes the cached copy: a corrupt or truncated entry is removed and the file pulled again.
- A file is filled under an exclusive lock on <root>/locks/<hex>, so pods starting together on one node
  download it once: the second waits, then copies what the first verified. Locks are taken in digest order,
  so two pulls of different sets sharing files cannot deadlock.
- Entries are copied into the pod's artifacts volume (a hard link where both share a mount), never used in
  place: evicting an entry cannot pull a file from under a running replica.
- After each pull, the least recently used entries outside the current set go until the cache fits its limit
  (the limit bounds what stays, not the set a pull needs at once).
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path

from bernini.artifacts.manifest import StageArtifact


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    """A file's SHA-256, read in 8 MiB blocks (the pull's check of files already in place, and the cache's)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LockTimeout(Exception):
    pass


class NodeCache:
    def __init__(self, root: Path, limit_bytes: int, log=print):
        self.root, self.limit_bytes, self.log = root, limit_bytes, log
        self.entries = root / "sha256"
        self.locks = root / "locks"
        for directory in (self.entries, self.locks):
            directory.mkdir(parents=True, exist_ok=True)

    def entry(self, sha256: str) -> Path:
        return self.entries / sha256

    @contextlib.contextmanager
    def holding(self, digests: list[str], deadline: float):
        """Exclusive locks on these digests, taken in sorted order, until the block ends."""
        with contextlib.ExitStack() as stack:
            for digest in sorted(set(digests)):
                handle = stack.enter_context((self.locks / digest).open("a"))
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise LockTimeout(f"another pod on this node holds the cache lock of {digest}") from None
                        time.sleep(0.1)
                stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            yield

    def take(self, artifact: StageArtifact, target: Path) -> bool:
        """Put a verified cached copy at target; False when there is none (a corrupt one is removed)."""
        cached = self.entry(artifact.sha256)
        if not cached.exists():
            return False
        if cached.stat().st_size != artifact.size or sha256_of(cached) != artifact.sha256:
            self.log(f"node cache: {artifact.file} ({artifact.sha256[:12]}) is corrupt there; pulling it again")
            cached.unlink(missing_ok=True)
            return False
        os.utime(cached)  # recently used: eviction goes oldest first
        _place(cached, target)
        return True

    def keep(self, artifact: StageArtifact, verified: Path) -> None:
        """Add a file the pull just verified."""
        _place(verified, self.entry(artifact.sha256))

    def evict(self, in_use: set[str]) -> int:
        """Delete least recently used entries outside in_use until the cache fits; returns bytes freed. An entry
        another pod holds locked (filling or copying it) is left alone; lock files stay (empty, and deleting
        one another pod has open would split the lock)."""
        entries = [(info.st_mtime, info.st_size, path) for path in self.entries.iterdir()
                   if not path.name.endswith(".partial") for info in (path.stat(),)]
        total, freed = sum(size for _, size, _ in entries), 0
        for _, size, path in sorted(entries):
            if total - freed <= self.limit_bytes:
                break
            if path.name in in_use:
                continue
            with (self.locks / path.name).open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                path.unlink(missing_ok=True)
                fcntl.flock(handle, fcntl.LOCK_UN)
            freed += size
        return freed


def _place(source: Path, target: Path) -> None:
    """target becomes a copy of source (a hard link when both share a mount), atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".partial")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:  # another mount (EXDEV), or a filesystem without links
        shutil.copyfile(source, temp)
    os.replace(temp, target)
