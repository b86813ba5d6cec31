"""The operator's preflight: read and judge manifest.json before anything is rolled out.

A failed preflight blocks creating or upgrading the RayService and leaves a running one untouched.
"""

import hashlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace

from bernini.api import reasons as r
from bernini.api.reasons import Cause
from bernini.api.spec import BerniniDeploymentSpec
from bernini.domain.instances import CATALOGUE, KINDS
from bernini.domain.pipeline import GRAPHS_OF_DEPLOYMENT, NEURAL_STAGES
from bernini.artifacts.manifest import MANIFEST_FILE, Manifest, UnsupportedManifestVersion, parse_manifest
from bernini.artifacts.guarded_store import Credentials, GuardedStore, StoreFailure, TooLarge
from bernini.artifacts.store import S3Location
from bernini.artifacts.verify import head_differences
from bernini.endpoints import EndpointRefused

logger = logging.getLogger("bernini.preflight")
CACHE_SECONDS = 60.0
# "Could not re-check" is not "found bad": a store outage keeps the last manifest verified for the same URI,
# however long it lasts, with the failed re-check in the condition's message.
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a few stages; more is not a manifest
# One deadline for a whole preflight (the manifest's GET and every listed object's HEAD): a store that
# trickles headers or bytes holds a worker this long at most.
PREFLIGHT_DEADLINE_SECONDS = 15.0
# What the manifest caches may hold. A parsed manifest takes up to ~10x its JSON (measured 9.2x on one of
# many short lists): entries count as PARSED_PER_RAW_BYTE times their JSON plus an allowance.
CACHE_BYTES = 64 << 20
PARSED_PER_RAW_BYTE = 10
_ENTRY_BYTES = 2048
BUSY_RETRY_SECONDS = 1.0


# Store reads one namespace may have in progress at once: a tenant's slow stores hold at most this many workers.
READS_PER_NAMESPACE = 2


class StoreBusy(Exception):
    """A read of the same store, or the namespace's share of reads, is in progress in other workers. Raised
    instead of waiting: one slow store holds one worker however many deployments point at it."""


@dataclass(frozen=True)
class Preflight:
    ok: bool
    cause: Cause
    manifest: Manifest | None = None
    manifest_sha256: str = ""


def _failed(reason: r.Reason, message: str) -> Preflight:
    return Preflight(False, Cause(reason, message))


def _major(version: str) -> int:
    """2 for "2.21.0" and for "02.0": versions are numbers, not text."""
    return int(version.split(".", 1)[0])


def _share_memory_bytes(spec: BerniniDeploymentSpec, accelerators: float) -> int | None:
    """Device memory of `accelerators` units on the allowed type with the least per unit (None on kind cpu)."""
    per_unit = [CATALOGUE[name].accelerator_memory_gib * 2**30 / CATALOGUE[name].accelerators
                for name in spec.accelerator.allowed_types if CATALOGUE[name].accelerators]
    return int(min(per_unit) * accelerators) if per_unit else None


def judge(spec: BerniniDeploymentSpec, manifest: Manifest, manifest_sha256: str) -> Preflight:
    """Spec-against-manifest checks; pure."""
    model = spec.model
    if (manifest.model.name, manifest.model.version) != (model.name, model.version):
        return _failed(r.MODEL_MISMATCH,
                         f"manifest is {manifest.model.name} {manifest.model.version}, spec.model asks "
                         f"{model.name} {model.version}")
    if manifest.target != spec.target:
        source = "spec.model.target" if model.target else f"accelerator kind {spec.accelerator.kind} needs"
        return _failed(r.TARGET_MISMATCH,
                         f"artifacts were compiled for {manifest.target}, {source} {spec.target}")
    missing = [stage for stage in NEURAL_STAGES if not manifest.of_stage(stage)]
    if missing:
        return _failed(r.STAGE_MISSING, f"manifest has no compiled {', '.join(missing)} stage")
    for name, replica_spec in spec.serve_deployments():
        if name not in GRAPHS_OF_DEPLOYMENT:
            continue
        graphs = [artifact for stage in GRAPHS_OF_DEPLOYMENT[name] for artifact in manifest.of_stage(stage)]
        needed = max((artifact.neuron_cores for artifact in graphs), default=0)
        given = replica_spec.amount(name, spec.accelerator.kind)
        if manifest.target == "inf2" and needed > given:
            return _failed(r.NEURON_CORES_TOO_FEW,
                             f"{name} was compiled for {needed} NeuronCores, spec.stages.{name} gives {given:g}")
        share = _share_memory_bytes(spec, given)
        graph_bytes = sum(artifact.size for artifact in graphs)
        if manifest.target != "cpu" and share == 0:
            return _failed(r.GRAPHS_DO_NOT_FIT, f"{name} loads {manifest.target} graphs, but spec.stages.{name} asks no "
                           f"{KINDS[spec.accelerator.kind].unit}s to load them on")
        if manifest.target != "cpu" and share is not None and graph_bytes > share:
            return _failed(r.GRAPHS_DO_NOT_FIT,
                           f"{name}'s compiled graphs take {graph_bytes / 2**30:.1f} GiB; spec.stages.{name}'s "
                           f"{given:g} {KINDS[spec.accelerator.kind].unit}s hold {share / 2**30:.1f} GiB of device "
                           "memory on the smallest allowed instance type")
    traced_with, image_has = manifest.toolchain.cuda, spec.runtime.cuda_version
    if traced_with and image_has and _major(traced_with) > _major(image_has):
        return _failed(r.CUDA_INCOMPATIBLE,
                         f"artifacts were traced with CUDA {traced_with}; the runtime image declares CUDA "
                         f"{image_has}, whose driver stack cannot run a newer major")
    compiled_with, runtime_pairs = manifest.toolchain.neuronx_cc, spec.runtime.neuron_compiler_version
    if compiled_with and runtime_pairs and _major(compiled_with) != _major(runtime_pairs):
        return _failed(r.COMPILER_INCOMPATIBLE,
                         f"artifacts were compiled by neuronx-cc {compiled_with}; the runtime image pairs with "
                         f"{runtime_pairs} and loads only the same major version")
    return Preflight(True, Cause(r.VERIFIED,
                     f"{model.name} {model.version} ({manifest.target}, {len(manifest.stages)} stages, "
                     f"{manifest.total_bytes} bytes)"), manifest, manifest_sha256)


class _BoundedCache:
    """Least recently used entries, bounded by bytes (a manifest may be up to 1 MiB; a count bound is not one)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._entries: OrderedDict[tuple, tuple[float, object, int]] = OrderedDict()

    def get(self, key: tuple) -> tuple[float, object] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0], entry[1]

    def put(self, key: tuple, value, size: int) -> None:
        if key in self._entries:
            self.used -= self._entries.pop(key)[2]
        self._entries[key] = (time.monotonic(), value, size + _ENTRY_BYTES)
        self.used += size + _ENTRY_BYTES
        while self.used > self.limit and len(self._entries) > 1:
            self.used -= self._entries.popitem(last=False)[1][2]


class ManifestReader:
    """Fetches manifests within one deadline and byte cap per preflight; re-reads a URI at most every
    CACHE_SECONDS; reads one store once at a time and a namespace's stores READS_PER_NAMESPACE at a time
    (StoreBusy rather than waiting)."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS, deadline_seconds: float = PREFLIGHT_DEADLINE_SECONDS,
                 cache_bytes: int = CACHE_BYTES, total_reads: int = 3):
        """total_reads: store reads in progress at once over all namespaces; keep it below the controller's
        workers, so slow stores of any number of tenants leave one worker for everyone else."""
        self._total_reads = total_reads
        self._deadline_seconds = deadline_seconds
        self._cache_seconds = cache_seconds
        self._cache = _BoundedCache(cache_bytes // 2)  # the last answer per (URI, region, endpoint)
        self._verified = _BoundedCache(cache_bytes // 2)  # the last verified manifest per key
        self._objects_checked = _BoundedCache(cache_bytes // 64)  # (URI, manifest digest) whose objects passed
        self._stores_reading: set[tuple] = set()  # (region, endpoint, bucket) with a read in progress
        self._namespace_reads: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._credentials = Credentials()

    def check(self, spec: BerniniDeploymentSpec, namespace: str = "") -> Preflight:
        fetched, recheck_failed = self._fetch(spec, namespace)
        if isinstance(fetched, Preflight):
            return fetched
        judged = judge(spec, *fetched)
        if judged.ok and recheck_failed:
            return replace(judged, cause=Cause(judged.cause.reason,
                                              f"{judged.cause.message}; the last re-check failed, kept: {recheck_failed}"))
        return judged

    def _fetch(self, spec: BerniniDeploymentSpec, namespace: str):
        key = (spec.model.artifacts_uri, spec.s3.region, spec.s3.endpoint_url)
        store = (spec.s3.region, spec.s3.endpoint_url, S3Location.parse(spec.model.artifacts_uri).bucket)
        with self._lock:
            cached = self._cache.get(key)
            if cached and time.monotonic() - cached[0] < self._cache_seconds:
                return cached[1]
            if (store in self._stores_reading or self._namespace_reads[namespace] >= READS_PER_NAMESPACE
                    or sum(self._namespace_reads.values()) >= self._total_reads):
                if cached:
                    return cached[1]  # stale beats waiting behind a slow store
                raise StoreBusy()
            self._stores_reading.add(store)
            self._namespace_reads[namespace] += 1
        try:
            result, size = self._read(spec)
        finally:
            with self._lock:
                self._stores_reading.discard(store)
                self._namespace_reads -= Counter({namespace: 1})
        answer = (result, None)
        with self._lock:
            if not isinstance(result, Preflight):
                self._verified.put(key, result, size)
            elif r.is_transient(result.cause.reason) and (last_good := self._verified.get(key)):
                logger.warning("%s; keeping the manifest verified %.0fs ago", result.cause.message,
                               time.monotonic() - last_good[0])
                answer = (last_good[1], result.cause.message)
            self._cache.put(key, answer, size)
        return answer

    def _read(self, spec: BerniniDeploymentSpec) -> tuple[Preflight | tuple[Manifest, str], int]:
        location = S3Location.parse(spec.model.artifacts_uri)
        uri = location.uri(MANIFEST_FILE)
        deadline = time.monotonic() + self._deadline_seconds
        try:
            store = GuardedStore(spec.s3.region, spec.s3.endpoint_url, self._credentials)
            raw = store.get(location.bucket, location.key(MANIFEST_FILE), MAX_MANIFEST_BYTES, deadline)
        except EndpointRefused as error:
            return _failed(r.ENDPOINT_REFUSED, f"spec.s3.endpointUrl: {error}"), 0
        except TooLarge:
            return _failed(r.MANIFEST_INVALID, f"{uri} is larger than {MAX_MANIFEST_BYTES >> 20} MiB"), 0
        except StoreFailure as failure:
            return _store_failure(failure, uri, location, self._deadline_seconds, manifest=True), 0
        try:
            manifest = parse_manifest(raw)
        except UnsupportedManifestVersion as error:
            return _failed(r.UNSUPPORTED_MANIFEST_VERSION, str(error)), 0
        except ValueError as error:
            return _failed(r.MANIFEST_INVALID, str(error)), 0
        digest = hashlib.sha256(raw).hexdigest()
        if self._objects_checked.get((uri, digest)) is None:
            problem = _check_listed_objects(store, location, manifest, deadline, self._deadline_seconds)
            if problem:
                return problem, 0
            self._objects_checked.put((uri, digest), True, 0)
        return (manifest, digest), PARSED_PER_RAW_BYTE * len(raw)


def _store_failure(failure: StoreFailure, uri: str, location: S3Location, deadline_seconds: float,
                   manifest: bool = False) -> Preflight:
    """The preflight reason for a failed exchange about uri (the manifest's or a listed object's)."""
    if failure.kind == "missing":
        if not manifest:
            return _failed(r.ARTIFACT_MISSING, f"{uri} is listed in the manifest but does not exist")
        missing = f"bucket {location.bucket}" if failure.code == "NoSuchBucket" else uri
        return _failed(r.MANIFEST_NOT_FOUND, f"{missing} does not exist")
    if failure.kind == "denied":
        return _failed(r.ACCESS_DENIED, f"reading {uri} was denied ({failure.code}); check the IAM role")
    if failure.kind == "refused":
        return _failed(r.ENDPOINT_REFUSED, f"spec.s3.endpointUrl: {failure}")
    if failure.kind == "nocredentials":
        return _failed(r.NO_CREDENTIALS, f"no AWS credentials to read {uri}: give the operator an IAM role")
    if failure.code == "Timeout":
        return _failed(r.STORE_UNREACHABLE, f"reading {uri} did not finish within {deadline_seconds:g}s")
    if failure.kind == "unreachable":
        return _failed(r.STORE_UNREACHABLE, f"reading {uri} failed: {failure}")
    return _failed(r.STORE_ERROR, f"reading {uri} failed: {failure}")


def _check_listed_objects(store: GuardedStore, location: S3Location, manifest: Manifest, deadline: float,
                          deadline_seconds: float) -> Preflight | None:
    """HEAD every object the manifest lists: a missing or different object fails here, not in every init
    container. Size and the published SHA-256 metadata are compared; the puller still hashes every byte."""
    for artifact in manifest.stages.values():
        uri = location.uri(artifact.file)
        try:
            head = store.head(location.bucket, location.key(artifact.file), deadline)
        except TooLarge:
            return _failed(r.STORE_ERROR, f"reading {uri} failed: the answer's headers are too large")
        except StoreFailure as failure:
            return _store_failure(failure, uri, location, deadline_seconds)
        differences = head_differences(head, artifact)
        if differences:
            return _failed(r.ARTIFACT_MISMATCH, f"{uri} is not the object the manifest lists: "
                             + "; ".join(differences))
    return None
