"""The node's artifact cache: files shared by the worker pods of one namespace on one node, named by their SHA-256
(<root>/sha256/<hex>), so a node downloads a file once however many of that namespace's pods and versions use it.

Namespaces never share a cache when each namespace's claim reaches its own host directory, as
examples/artifacts-cache.yaml sets up.
Within a namespace any pod sharing the cache may be broken or hostile, so nothing found in it is trusted:

- An entry is opened once, never through a symlink and never waiting on a FIFO, and must be a regular file. It is
  copied from that descriptor into a temporary file in the pod's volume, hashing the very bytes written, and the copy
  takes its final name only when they are the manifest's. A neighbour that rewrites or swaps the entry meanwhile makes
  a miss (the file is downloaded), never a wrong file.
- Always a copy, never a hard link, both ways: a link shares its inode, which a neighbour could write after the check.
- Anything other than a regular file at an entry or lock path (FIFO, directory, symlink, socket, device) is logged,
  removed when it can be, and never followed, read or waited on: an entry there is a miss, a lock is made anew.
- A file is filled under an exclusive lock on <root>/locks/<hex>, so pods starting together on one node download it
  once: the second waits (until the pull's deadline, never in a blocking call), then copies what the first verified.
  Locks are taken in digest order, so two pulls of different sets sharing files cannot deadlock. A lock path that
  cannot be made a regular file is skipped: that file may then be downloaded twice, never wrongly.
- Keeping a verified file is best effort: the pull already has its files, so a full cache (ENOSPC, EDQUOT) or any
  other failure to keep one is logged, leaves no temporary file, and never fails the pull.
- After each pull, the least recently used entries outside the current set go until the cache fits its limit (the
  limit bounds what stays, not the set a pull needs at once). Temporary files count toward it, and stale ones (their
  writer gone) are removed. Pulls evicting at once tolerate each other's deletions; eviction never fails a pull.
"""

import contextlib
import fcntl
import hashlib
import os
import secrets
import stat
import time
import weakref
from pathlib import Path

from bernini.artifacts.manifest_files import FileEntry

ENTRIES, LOCKS = "sha256", "locks"
COPY_BUFFER = 1 << 20  # small enough that hashing reads the block from the CPU's cache, not from memory again
TEMP_SUFFIX = ".partial"
STALE_TEMP_SECONDS = 3600  # a keep writes continuously: a temporary file untouched this long lost its writer
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO never waits for a writer; reads of regular files ignore it.
REGULAR_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def sha256_of(path: Path) -> str:
    """A file's SHA-256 (the pull's check of files already in its own volume): hashlib reads it through one small
    buffer that stays in the CPU's cache."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class LockTimeout(Exception):
    pass


class NodeCache:
    def __init__(self, root: Path, limit_bytes: int, log=print):
        self.root, self.limit_bytes, self.log = root, limit_bytes, log
        root.mkdir(parents=True, exist_ok=True)
        # Every operation goes through these descriptors, so swapping a directory for a symlink later redirects none.
        self._entries = _open_directory(root / ENTRIES, log)
        self._locks = _open_directory(root / LOCKS, log)
        for descriptor in (self._entries, self._locks):
            weakref.finalize(self, os.close, descriptor)

    @contextlib.contextmanager
    def holding(self, digests: list[str], deadline: float):
        """Exclusive locks on these digests, taken in sorted order, until the block ends (closing releases them)."""
        with contextlib.ExitStack() as stack:
            for digest in sorted(set(digests)):
                handle = self._lock_file(digest)
                if handle is None:
                    continue
                stack.callback(os.close, handle)
                _wait_for_lock(handle, deadline, digest)
            yield

    def take(self, artifact: FileEntry, target: Path) -> bool:
        """Put a verified copy of the cached entry at target; False when there is none (a wrong one is removed).
        OSError is a disk failing: mostly the pod's volume, when it is full (ENOSPC)."""
        source = self._open_regular(self._entries, artifact.sha256, "entry")
        if source is None:
            return False
        try:
            if os.fstat(source).st_size != artifact.size or not _copy_verified(source, target, artifact):
                self.log(f"node cache: {artifact.file} ({artifact.sha256[:12]}) is corrupt there; pulling it again")
                _unlink(self._entries, artifact.sha256)
                return False
            with contextlib.suppress(OSError):  # recently used, so eviction goes oldest first; only a hint
                os.utime(source)
            return True
        finally:
            os.close(source)

    def keep(self, artifact: FileEntry, verified: Path) -> None:
        """Add a copy of a file the pull just verified, best effort: a failure (a full cache) is logged and leaves no
        temporary file. The temporary name is new (O_EXCL): nothing a neighbour put at a predictable one is opened."""
        temp = f"{artifact.sha256}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            _copy_into(self._entries, temp, verified)
            os.replace(temp, artifact.sha256, src_dir_fd=self._entries, dst_dir_fd=self._entries)
        except OSError as error:
            _unlink(self._entries, temp)
            self.log(f"node cache: not keeping {artifact.file} ({artifact.sha256[:12]}): {error}; "
                     f"the pull has its copy")

    def evict(self, in_use: set[str]) -> int:
        """Delete least recently used entries outside in_use until the cache fits; returns bytes freed. Temporary files
        count, and stale ones go first. An entry another pod holds locked (filling or copying it) is left alone; lock
        files stay (empty, and deleting one another pod has open would split the lock)."""
        files = _regular_files(self._entries)
        total, freed = sum(size for _, size, _ in files), 0
        stale_before = time.time() - STALE_TEMP_SECONDS
        for mtime, size, name in files:
            if name.endswith(TEMP_SUFFIX) and mtime < stale_before and _unlink(self._entries, name):
                freed += size
        for _, size, name in sorted(files):
            if total - freed <= self.limit_bytes:
                break
            if name in in_use or name.endswith(TEMP_SUFFIX):
                continue
            if self._evict_entry(name):
                freed += size
        return freed

    def _evict_entry(self, name: str) -> bool:
        """True when this call deleted the entry: not when another pod holds its lock, nor when another eviction
        deleted it first."""
        handle = self._lock_file(name)
        try:
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _unlink(self._entries, name)
        except BlockingIOError:
            return False
        finally:
            if handle is not None:
                os.close(handle)

    def _lock_file(self, digest: str) -> int | None:
        """A descriptor of the digest's lock file, made when missing; None when its path cannot be made a regular
        file (logged: the caller goes on without that lock)."""
        for _ in range(2):  # the second try creates a regular file where _open_regular removed something else
            handle = self._open_regular(self._locks, digest, "lock", os.O_CREAT)
            if handle is not None:
                return handle
        self.log(f"node cache: going on without the lock of {digest[:12]}")
        return None

    def _open_regular(self, directory: int, name: str, what: str, create: int = 0) -> int | None:
        """A read-only descriptor of the regular file directory/name; None when there is none. Anything else there is
        never followed, read or waited on: it is logged and removed when it can be."""
        try:
            handle = os.open(name, os.O_RDONLY | REGULAR_FLAGS | create, 0o644, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as error:  # ELOOP: a symlink; ENXIO: a socket
            self.log(f"node cache: cannot open the {what} {name[:12]}: {error.strerror}")
        else:
            if stat.S_ISREG(os.fstat(handle).st_mode):
                return handle
            os.close(handle)
        self._discard(directory, name, what)
        return None

    def _discard(self, directory: int, name: str, what: str) -> None:
        """Remove what is not a regular file at directory/name (a directory only when empty), never following it."""
        try:
            mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISREG(mode):  # replaced meanwhile by a file: a later open checks that one
            return
        try:
            (os.rmdir if stat.S_ISDIR(mode) else os.unlink)(name, dir_fd=directory)
            self.log(f"node cache: removed {_kind(mode)} found at the {what} {name[:12]}")
        except FileNotFoundError:
            pass
        except OSError as error:
            self.log(f"node cache: {_kind(mode)} at the {what} {name[:12]} stays ({error.strerror}); ignoring it")


def _open_directory(path: Path, log) -> int:
    """path as a directory, made when missing; never through a symlink, which could point anywhere the pod may write
    (eviction deletes what it finds there). Anything else found at path is replaced."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    try:
        return os.open(path, DIRECTORY_FLAGS)
    except NotADirectoryError:  # a file, or a symlink (O_NOFOLLOW)
        log(f"node cache: {path} is not a directory; replacing it")
    os.unlink(path)
    os.mkdir(path)
    return os.open(path, DIRECTORY_FLAGS)


def _wait_for_lock(handle: int, deadline: float, digest: str) -> None:
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LockTimeout(f"another pod on this node holds the cache lock of {digest}") from None
            time.sleep(0.1)


def _copy_verified(source: int, target: Path, artifact: FileEntry) -> bool:
    """Copy source into target's temporary file, hashing exactly the bytes written (never more than the manifest's
    size); target takes its final name only when they are the artifact's. No temporary file stays either way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + TEMP_SUFFIX)
    digest, copied = hashlib.sha256(), 0
    buffer = memoryview(bytearray(COPY_BUFFER))
    try:
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            # One byte past the size is enough to know the entry is too long (a neighbour may append for ever).
            while copied <= artifact.size:
                read = os.readv(source, [buffer[:artifact.size + 1 - copied]])
                if not read:
                    break
                block = buffer[:read]
                _write_all(out, block)
                digest.update(block)
                copied += read
        finally:
            os.close(out)
        if copied != artifact.size or digest.hexdigest() != artifact.sha256:
            return False
        os.replace(temp, target)
        return True
    finally:
        temp.unlink(missing_ok=True)


def _write_all(out: int, data: memoryview) -> None:
    while data:
        data = data[os.write(out, data):]


def _copy_into(directory: int, name: str, source: Path) -> None:
    """A new file directory/name holding source's bytes (in the kernel: sendfile)."""
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory)
    try:
        with source.open("rb") as handle:
            size, offset = os.fstat(handle.fileno()).st_size, 0
            while offset < size:
                sent = os.sendfile(out, handle.fileno(), offset, size - offset)
                if sent == 0:
                    raise OSError(f"{source} shrank while it was kept")
                offset += sent
    finally:
        os.close(out)


def _regular_files(directory: int) -> list[tuple[float, int, str]]:
    """(mtime, size, name) of the regular files in directory; one deleted meanwhile (another eviction) is left out."""
    files = []
    with os.scandir(directory) as listing:
        for entry in listing:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                files.append((info.st_mtime, info.st_size, entry.name))
    return files


def _unlink(directory: int, name: str) -> bool:
    """True when this call deleted directory/name; False when it was already gone."""
    try:
        os.unlink(name, dir_fd=directory)
        return True
    except FileNotFoundError:
        return False


def _kind(mode: int) -> str:
    for is_kind, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
                          (stat.S_ISSOCK, "a socket")):
        if is_kind(mode):
            return kind
    return "a device"
