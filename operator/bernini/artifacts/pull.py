"""`bernini artifacts pull`: the init container that puts exactly the verified artifact set on local disk.

Parallel ranged GETs across all files; each file's SHA-256 is computed in byte order while its parts
arrive; a file only appears under its final name (atomic rename) once its digest matched the manifest.
Files already present and matching are skipped, so a restarted pull resumes where it stopped.
"""

import errno
import functools
import hashlib
import os
import re
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bernini.artifacts.credentials import CredentialChain, CredentialsError
from bernini.artifacts.manifest_files import MANIFEST_FILE, UNSAFE_KEY, FileEntry, UnsupportedManifestVersion, files_of
from bernini.artifacts.node_cache import LockTimeout, NodeCache, sha256_of
from bernini.artifacts.ranged import DeadlinePassed, RangedReader, RangeError, RangeIgnored
from bernini.artifacts.sigv4 import object_url, presign_get
from bernini.artifacts.store import S3Location, kind_of_code

MiB = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists at most 64 stages; the operator refuses more too
PRESIGNED_SECONDS = 6 * 3600  # credentials may expire sooner: a refused part re-signs its URL once


class PullError(Exception):
    """A failure with a specific message and exit code; the init container exits with it."""

    exit_code = 1


class ManifestMissing(PullError):
    exit_code = 2


class AccessDenied(PullError):
    exit_code = 3


class ChecksumMismatch(PullError):
    exit_code = 4


class ManifestUnsupported(PullError):
    exit_code = 5


class ManifestChanged(PullError):
    exit_code = 6


class UnsafeKey(PullError):
    exit_code = 7


class ArtifactMissing(PullError):
    """A stage object the manifest lists is not in the store (the manifest itself is: exit 2 is for that)."""

    exit_code = 8


class DiskFull(PullError):
    exit_code = 9


class DeadlineExceeded(PullError):
    exit_code = 10


def _disk_error(error: OSError, path: Path) -> PullError | OSError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left for {path.name} on the volume of {path.parent}: give the artifacts "
                        f"volume room for the whole set")
    return error


@dataclass
class PullReport:
    files: int = 0  # downloaded from the store
    skipped: int = 0  # already in the destination, verified
    bytes: int = 0  # downloaded from the store
    seconds: float = 0.0
    cached_files: int = 0  # copied from the node cache, verified
    cached_bytes: int = 0

    @property
    def mib_per_second(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, int | float]:
        """Where the bytes came from, as the init container's termination message carries it into pod status."""
        return {"storeFiles": self.files, "storeBytes": self.bytes, "cacheFiles": self.cached_files,
                "cacheBytes": self.cached_bytes, "presentFiles": self.skipped, "seconds": round(self.seconds, 2)}


def _store_error(status: int, code: str, what: str) -> PullError:
    """What the store's refusal means, from its error code (RangeError carries the code, never the answer)."""
    code = code if code and not code.startswith("HTTP ") else str(status)
    kind = kind_of_code(code)
    if kind == "missing":
        return ManifestMissing(f"{what} does not exist ({code})")
    if kind == "denied":
        return AccessDenied(f"access to {what} was denied ({code}); check the pod's IAM role")
    return PullError(f"reading {what} failed: {code}")


def safe_destination(dest: Path, key: str) -> Path:
    root = dest.resolve()
    target = (root / key).resolve()
    if target == root or root not in target.parents:
        raise UnsafeKey(f"manifest key {key!r} would escape {dest}")
    return target


@dataclass
class _FileJob:
    """One file in flight: parts land at their offsets; the digest follows in byte order."""

    artifact: FileEntry
    target: Path
    part_size: int
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    next_part: int = 0
    pending: dict[int, tuple[memoryview, bytearray]] = field(default_factory=dict)
    hashing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    fd: int = -1
    url: str = ""  # presigned GET

    @property
    def temp(self) -> Path:
        return self.target.with_name(self.target.name + ".partial")

    @property
    def parts(self) -> int:
        return max(1, -(-self.artifact.size // self.part_size))

    def open(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.temp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        os.ftruncate(self.fd, self.artifact.size)

    def write(self, data: memoryview, offset: int) -> None:
        """pwrite all of data (a short write is continued; a full disk is DiskFull)."""
        while data:
            try:
                written = os.pwrite(self.fd, data, offset)
            except OSError as error:
                raise _disk_error(error, self.target) from None
            data, offset = data[written:], offset + written

    def land(self, index: int, data: memoryview, buffer: bytearray) -> tuple[bool, list[bytearray]]:
        """Write a part, then hash whatever is next in byte order unless another thread already does.

        Returns (this call completed the file's digest, buffers whose bytes are hashed and reusable).
        Hashing happens outside the lock, so threads landing other parts never wait for it."""
        self.write(data, index * self.part_size)
        with self.lock:
            self.pending[index] = (data, buffer)
            if self.hashing:
                return False, []
            self.hashing = True
        released = []
        while True:
            with self.lock:
                item = self.pending.pop(self.next_part, None)
                if item is None:
                    self.hashing = False
                    return self.next_part == self.parts, released
                self.next_part += 1
            self.digest.update(item[0])
            released.append(item[1])

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.temp.unlink(missing_ok=True)

    def finish(self) -> None:
        os.close(self.fd)
        self.fd = -1
        actual = self.digest.hexdigest()
        if actual != self.artifact.sha256:
            self.temp.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"checksum mismatch for {self.artifact.file}: manifest says {self.artifact.sha256}, got {actual}"
            )
        os.replace(self.temp, self.target)


class _Oversized(RangeError):
    def __init__(self):
        super().__init__(0, "larger than a manifest")


def _back_off(attempt: int) -> None:
    # Jittered: sixteen parts failing together must not retry together.
    time.sleep(random.uniform(0.5, 1.0) * min(5.0, 0.2 * 2**attempt))


def _is_present(artifact: FileEntry, target: Path) -> bool:
    """A file a restarted pull already verified (its bytes are read again: they could have changed since)."""
    return target.exists() and target.stat().st_size == artifact.size and sha256_of(target) == artifact.sha256


def _on_every_core(check, pairs: list[tuple[FileEntry, Path]]) -> list:
    """check(artifact, target) for each pair, largest files first on as many threads as cores (hashing a file is
    one core's work; hashlib and file I/O let the others run); the answers in the pairs' order."""
    from concurrent.futures import ThreadPoolExecutor  # imported once there is work: it costs start-up

    order = sorted(range(len(pairs)), key=lambda index: -pairs[index][0].size)
    answers = [None] * len(pairs)
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:  # the cores this container may run on
        for index, answer in zip(order, pool.map(lambda index: check(*pairs[index]), order)):
            answers[index] = answer
    return answers


def _check_room(dest: Path, jobs: list[_FileJob]) -> None:
    """Fail before a byte is downloaded when the volume cannot hold the set (the files are open, so a stale
    .partial no longer counts). Free space, not reserved blocks: fallocate zeroes every page on tmpfs, which cost
    a tenth of the pull; a volume that fills meanwhile still exits 9 at the write that fails."""
    stats = os.statvfs(dest)
    free = stats.f_bavail * stats.f_frsize
    needed = 0
    for job in jobs:
        needed += job.artifact.size
        if needed > free:
            total = sum(job.artifact.size for job in jobs)
            raise DiskFull(f"no space left for {job.target.name} on the volume of {dest}: the files to download "
                           f"need {total / MiB:.1f} MiB and {free / MiB:.1f} MiB are free; give the artifacts volume "
                           f"room for the whole set")


def _interleaved(jobs: list[_FileJob], ranged: bool) -> list[tuple[_FileJob, int]]:
    """(job, part index) in the order parts are fetched: the large files' parts round-robin, largest first, so
    every file's digest advances at once and one late part holds up only its own file's hashing; the one-part
    files spread evenly among them, so the first round is not a queue of small requests."""
    if not ranged:
        return [(job, 0) for job in sorted(jobs, key=lambda job: -job.artifact.size)]
    ordered = sorted((job for job in jobs if job.parts > 1), key=lambda job: -job.artifact.size)
    parts = []
    for index in range(max((job.parts for job in ordered), default=0)):
        parts += [(job, index) for job in ordered if index < job.parts]
    singles = [(job, 0) for job in sorted(jobs, key=lambda job: -job.artifact.size) if job.parts == 1]
    every = max(1, len(parts) // (len(singles) + 1))
    merged = []
    for position, part in enumerate(parts):
        if singles and position % every == every - 1:
            merged.append(singles.pop(0))
        merged.append(part)
    return merged + singles


class _BufferPool:
    """At most `limit` part buffers, allocated on first need and reused."""

    def __init__(self, limit: int, size: int):
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._limit, self._size, self._created = limit, size, 0
        self._lock = threading.Lock()

    def take(self, failed: threading.Event) -> bytearray | None:
        while not failed.is_set():
            with self._lock:
                if self._free.empty() and self._created < self._limit:
                    self._created += 1
                    return bytearray(self._size)
            try:
                return self._free.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def give(self, buffer: bytearray) -> None:
        self._free.put(buffer)


class Puller:
    def __init__(self, uri: str, dest: Path, region: str = "us-east-1", endpoint_url: str | None = None,
                 concurrency: int = 16, part_size: int = 16 * MiB, attempts: int = 5, log=print,
                 deadline_seconds: float = float("inf"), presigned_seconds: int = PRESIGNED_SECONDS,
                 cache: NodeCache | None = None):
        self.cache = cache
        self.landed = 0  # bytes written so far, for a progress display only (unlocked: may lag by a part)
        self.expected = 0  # bytes this pull downloads, once known
        self.deadline_seconds = deadline_seconds
        self.deadline = float("inf")  # set when a pull starts
        self.presigned_seconds = presigned_seconds
        self.location = S3Location.parse(uri)
        self.dest = dest
        self.concurrency = concurrency
        self.part_size = part_size
        self.attempts = attempts
        self.log = log
        self.ranges = RangedReader()
        self.region, self.endpoint_url = region, endpoint_url
        self.credentials = CredentialChain(region)
        self.first_request_at: float | None = None  # time.monotonic() as the manifest's GET went out

    def read_manifest(self, expected_sha256: str | None) -> tuple[list[FileEntry], bytes]:
        uri = self.location.uri(MANIFEST_FILE)
        url = self._presign(MANIFEST_FILE)
        self.first_request_at = self.first_request_at or time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                raw = self._read_small(url)
                break
            except DeadlinePassed:
                raise self._deadline_error("the manifest") from None
            except _Oversized:
                raise PullError(f"{uri} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest") from None
            except RangeError as error:
                if 400 <= error.status < 500 and error.status not in (408, 429):
                    raise _store_error(error.status, str(error), uri) from None
                if attempt == self.attempts:
                    if error.status:
                        raise PullError(f"reading {uri} failed: HTTP {error.status} ({error})") from None
                    raise PullError(f"cannot reach the artifact store for {uri}: {error}") from None
                _back_off(attempt)
        digest = hashlib.sha256(raw).hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise ManifestChanged(
                f"{uri} has sha256 {digest}, but the operator verified {expected_sha256}: the artifact set changed "
                f"after preflight; the operator will roll out the new one"
            )
        try:
            return files_of(raw), raw
        except UnsupportedManifestVersion as error:
            raise ManifestUnsupported(str(error)) from None
        except ValueError as error:
            raise (UnsafeKey if UNSAFE_KEY in str(error) else PullError)(str(error)) from None

    def _read_small(self, url: str) -> bytes:
        data = bytearray()

        def sink(view: memoryview) -> None:
            data.extend(view)
            if len(data) > MAX_MANIFEST_BYTES:
                raise _Oversized()
        self.ranges.stream(url, bytearray(64 << 10), sink, self.deadline)
        return bytes(data)

    def pull(self, expected_manifest_sha256: str | None = None) -> PullReport:
        started = time.monotonic()
        self.deadline = started + self.deadline_seconds
        files, raw = self.read_manifest(expected_manifest_sha256)
        self.dest.mkdir(parents=True, exist_ok=True)
        report = PullReport()
        missing = []
        targets = [(artifact, safe_destination(self.dest, artifact.file)) for artifact in files]
        for (artifact, target), present in zip(targets, _on_every_core(_is_present, targets)):
            if present:
                report.skipped += 1
                self.log(f"present and verified: {artifact.file}")
            else:
                missing.append((artifact, target))
        if self.cache is None:
            jobs = [_FileJob(artifact, target, self.part_size) for artifact, target in missing]
            self._download(jobs)
        else:
            jobs = self._through_cache(missing, report)
            self.cache.evict({artifact.sha256 for artifact in files})
        report.files = len(jobs)
        report.bytes = sum(job.artifact.size for job in jobs)
        # The manifest goes last, like the compile tool's upload: its presence means the set is complete.
        manifest_path = self.dest / MANIFEST_FILE
        temp = manifest_path.with_name(MANIFEST_FILE + ".partial")
        temp.write_bytes(raw)
        os.replace(temp, manifest_path)
        report.seconds = time.monotonic() - started
        return report

    def _through_cache(self, missing: list[tuple[FileEntry, Path]], report: PullReport) -> list["_FileJob"]:
        """Copy what the node cache holds; download the rest once per node (under the cache's locks) and add it."""
        jobs = []
        try:
            with self.cache.holding([artifact.sha256 for artifact, _ in missing], self.deadline):
                for (artifact, target), hit in zip(missing, _on_every_core(self._take_cached, missing)):
                    if hit:
                        report.cached_files += 1
                        report.cached_bytes += artifact.size
                        self.log(f"from the node cache, verified: {artifact.file}")
                    else:
                        jobs.append(_FileJob(artifact, target, self.part_size))
                self._download(jobs)
                for job in jobs:
                    self.cache.keep(job.artifact, job.target)  # best effort: a full cache never fails the pull
        except LockTimeout as error:
            raise self._deadline_error(str(error)) from None
        return jobs

    def _take_cached(self, artifact: FileEntry, target: Path) -> bool:
        try:
            return self.cache.take(artifact, target)
        except OSError as error:  # the copy fills the pod's artifacts volume, not the cache
            raise _disk_error(error, target) from None

    def _download(self, jobs: list[_FileJob]) -> None:
        # Imported here, after the manifest's request went out: with logging, which it brings, it costs start-up.
        from concurrent.futures import ThreadPoolExecutor, wait

        self.expected = sum(job.artifact.size for job in jobs)
        # Parts are read into reused buffers (fresh allocations would page-fault on every part); a buffer returns
        # to the pool once its bytes are hashed, which also bounds memory (24 x 16 MiB by default). Half as many
        # spare buffers as parts in flight let parts land ahead of a file's slowest one.
        buffers = _BufferPool(self.concurrency + self.concurrency // 2, self.part_size)
        failed = threading.Event()
        futures = []
        try:
            for job in jobs:
                job.open()
            _check_room(self.dest, jobs)
            probe = next((job for job in jobs if job.artifact.size > 1), None)
            ranged = probe is None or self.ranges.supports_ranges(self._signed(probe))
            if not ranged:
                self.log("the store ignores Range requests: streaming each file once instead")
            with ThreadPoolExecutor(self.concurrency) as pool:
                try:
                    for job, index in _interleaved(jobs, ranged):
                        buffer = buffers.take(failed)
                        if buffer is None:
                            break
                        self._signed(job)  # as its parts are queued: the first parts download while the rest sign
                        work = self._part if ranged else self._whole
                        futures.append(pool.submit(work, job, index, buffer, buffers, failed))
                except BaseException:
                    failed.set()
                    pool.shutdown(cancel_futures=True)
                    raise
                wait(futures)
            errors = [f.exception() for f in futures if not f.cancelled() and f.exception()]
            if errors:
                raise errors[0]
        except BaseException:
            for job in jobs:
                job.abandon()
            raise

    def _signed(self, job: _FileJob) -> str:
        if not job.url:
            job.url = self._presign(job.artifact.file)
        return job.url

    def _presign(self, relative: str) -> str:
        """A GET URL for the object; credentials close to expiry (IRSA, Pod Identity) are fetched anew first."""
        if not self._signs_itself:  # botocore resolves its own credentials: asking ours too would ask STS twice
            from botocore.exceptions import NoCredentialsError

            try:
                return self._botocore_s3.generate_presigned_url(
                    "get_object", Params={"Bucket": self.location.bucket, "Key": self.location.key(relative)},
                    ExpiresIn=self.presigned_seconds)
            except NoCredentialsError:
                raise AccessDenied(f"no credentials for {self.location.uri(relative)}: no AWS credentials found: "
                                   f"give the pod an IAM role (IRSA or EKS Pod Identity)") from None
        try:
            credentials = self.credentials.current()
        except CredentialsError as error:
            raise AccessDenied(f"no credentials for {self.location.uri(relative)}: {error}") from None
        url = object_url(self.location.bucket, self.location.key(relative), self.region, self.endpoint_url)
        return presign_get(url, self.region, credentials, self.presigned_seconds)

    @functools.cached_property
    def _signs_itself(self) -> bool:
        """Whether sigv4.py knows this store's URLs: AWS's commercial, GovCloud and China partitions, or an
        explicit endpoint. FIPS and dual-stack endpoints, the other partitions and S3 Express directory buckets
        are botocore's to address (it is imported only then)."""
        if self.endpoint_url:
            return True
        wanted = any(os.environ.get(name, "").lower() == "true"
                     for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"))
        return (not wanted and not self.location.bucket.endswith("--x-s3")
                and re.fullmatch(r"(cn|us-gov|us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-[0-9]+", self.region) is not None)

    @functools.cached_property
    def _botocore_s3(self):
        from bernini.artifacts.store import s3_client

        return s3_client(self.region, self.endpoint_url)

    def _part(self, job: _FileJob, index: int, buffer: bytearray, buffers: "_BufferPool",
              failed: threading.Event) -> None:
        try:
            self._fetch_part(job, index, buffer, buffers)
        except BaseException:
            failed.set()
            raise

    def _whole(self, job: _FileJob, _index: int, buffer: bytearray, buffers: "_BufferPool",
               failed: threading.Event) -> None:
        """One GET of the whole file, written and hashed as it streams (stores that ignore Range)."""
        what = self.location.uri(job.artifact.file)
        offset = 0

        def sink(view: memoryview) -> None:
            nonlocal offset
            if offset + len(view) > job.artifact.size:
                raise ChecksumMismatch(f"{what} is longer than the manifest's {job.artifact.size} bytes")
            job.write(view, offset)
            job.digest.update(view)
            offset += len(view)
            self.landed += len(view)
        try:
            try:
                self.ranges.stream(job.url, buffer, sink, self.deadline)
            except DeadlinePassed:
                raise self._deadline_error(what) from None
            except RangeError as error:
                raise PullError(f"reading {what} failed: HTTP {error.status or ''} {error}") from None
            if offset != job.artifact.size:
                raise ChecksumMismatch(f"{what} is shorter than the manifest's {job.artifact.size} bytes ({offset})")
            job.finish()
            self.log(f"verified {job.artifact.file} ({job.artifact.size / MiB:.1f} MiB, streamed)")
        except BaseException:
            failed.set()
            raise
        finally:
            buffers.give(buffer)

    def _deadline_error(self, what: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"the pull did not finish within {self.deadline_seconds:g}s (at {what}); "
                                f"the store is too slow or stalled")

    def _fetch_part(self, job: _FileJob, index: int, buffer: bytearray, buffers: "_BufferPool") -> None:
        start = index * job.part_size
        end = min(job.artifact.size, start + job.part_size) - 1
        what = self.location.uri(job.artifact.file)
        length = end - start + 1
        view = memoryview(buffer)[:max(0, length)]
        resigned = False
        for attempt in range(1, self.attempts + 1):
            try:
                if length > 0:
                    self.ranges.read_range(job.url, start, view, self.deadline)
                break
            except DeadlinePassed:
                raise self._deadline_error(what) from None
            except RangeIgnored:
                raise PullError(f"the store answered a ranged GET of {what} with the whole object") from None
            except RangeError as error:
                if error.status == 404:
                    raise ArtifactMissing(f"{what} does not exist, but the manifest lists it") from None
                refused = error.status in (401, 403) or (error.status == 400 and kind_of_code(str(error)) == "denied")
                if refused and not resigned:
                    # The URL's credentials may have expired mid-pull: sign again (fresh credentials) once.
                    with job.lock:
                        job.url = self._presign(job.artifact.file)
                    resigned = True
                    continue
                if refused:
                    raise _store_error(error.status, str(error), what) from None
                if error.status == 416 or (attempt == self.attempts and str(error).startswith("short read")):
                    raise ChecksumMismatch(f"{what} is shorter than the manifest's {job.artifact.size} bytes "
                                           f"(bytes {start}-{end}: {error})") from None
                if 400 <= error.status < 500 and error.status not in (408, 429):
                    raise PullError(f"reading {what} was refused (HTTP {error.status}): {error}") from None
                if attempt == self.attempts:
                    raise PullError(f"reading {what} bytes {start}-{end} failed after {attempt} attempts: {error}") from None
                _back_off(attempt)
        complete, released = job.land(index, view, buffer)
        self.landed += len(view)
        for spent in released:
            buffers.give(spent)
        if complete:
            job.finish()
            self.log(f"verified {job.artifact.file} ({job.artifact.size / MiB:.1f} MiB)")
