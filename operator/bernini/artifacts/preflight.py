"""The operator's preflight: read and judge manifest.json before anything is rolled out.

A failed preflight blocks creating or upgrading the RayService and leaves a running one untouched.
"""

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from bernini.api.spec import BerniniDeploymentSpec
from bernini.pipeline import NEURAL_STAGES
from bernini.artifacts.manifest import MANIFEST_FILE, Manifest, UnsupportedManifestVersion, parse_manifest
from bernini.artifacts.store import S3Location, failure_kind, s3_client
from bernini.artifacts.verify import head_differences

logger = logging.getLogger("bernini.preflight")
CACHE_SECONDS = 60.0
# A store outage shorter than this keeps the last verified manifest: a blip must not flip Ready.
TRANSIENT_GRACE_SECONDS = 600.0
TRANSIENT_REASONS = ("StoreUnreachable", "StoreError")
# One botocore client costs ~12 MiB: bound them, or ~35 edits of spec.s3.region exhaust a 512Mi operator.
MAX_CLIENTS = 8
MAX_MANIFESTS = 4096  # distinct (URI, region, endpoint) remembered; beyond, the least recently used go
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a few stages; more is not a manifest
# A store that trickles bytes passes every per-read timeout: the whole manifest read has this deadline too.
MANIFEST_DEADLINE_SECONDS = 15.0


@dataclass(frozen=True)
class Preflight:
    ok: bool
    reason: str
    message: str
    manifest: Manifest | None = None
    manifest_sha256: str = ""


def _major(version: str) -> int:
    """2 for "2.21.0" and for "02.0": versions are numbers, not text."""
    return int(version.split(".", 1)[0])


def judge(spec: BerniniDeploymentSpec, manifest: Manifest, manifest_sha256: str) -> Preflight:
    """Spec-against-manifest checks; pure."""
    model = spec.model
    if (manifest.model.name, manifest.model.version) != (model.name, model.version):
        return Preflight(False, "ModelMismatch",
                         f"manifest is {manifest.model.name} {manifest.model.version}, spec.model asks "
                         f"{model.name} {model.version}")
    if manifest.target != spec.target:
        source = "spec.model.target" if model.target else f"accelerator kind {spec.accelerator.kind} needs"
        return Preflight(False, "TargetMismatch",
                         f"artifacts were compiled for {manifest.target}, {source} {spec.target}")
    missing = [stage for stage in NEURAL_STAGES if not manifest.of_stage(stage)]
    if missing:
        return Preflight(False, "StageMissing", f"manifest has no compiled {', '.join(missing)} stage")
    for name, stage in spec.stages.items():
        needed = max((artifact.neuron_cores for artifact in manifest.of_stage(name)), default=0)
        given = stage.amount(name, spec.accelerator.kind)
        if manifest.target == "inf2" and needed > given:
            return Preflight(False, "NeuronCoresTooFew",
                             f"{name} was compiled for {needed} NeuronCores, spec.stages.{name} gives {given:g}")
    traced_with, image_has = manifest.toolchain.cuda, spec.runtime.cuda_version
    if traced_with and image_has and _major(traced_with) > _major(image_has):
        return Preflight(False, "CudaIncompatible",
                         f"artifacts were traced with CUDA {traced_with}; the runtime image declares CUDA "
                         f"{image_has}, whose driver stack cannot run a newer major")
    compiled_with, runtime_pairs = manifest.toolchain.neuronx_cc, spec.runtime.neuron_compiler_version
    if compiled_with and runtime_pairs and _major(compiled_with) != _major(runtime_pairs):
        return Preflight(False, "CompilerIncompatible",
                         f"artifacts were compiled by neuronx-cc {compiled_with}; the runtime image pairs with "
                         f"{runtime_pairs} and loads only the same major version")
    return Preflight(True, "Verified",
                     f"{model.name} {model.version} ({manifest.target}, {len(manifest.stages)} stages, "
                     f"{manifest.total_bytes} bytes)", manifest, manifest_sha256)


class ManifestReader:
    """Fetches manifests with short timeouts; re-reads a URI at most every CACHE_SECONDS."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS, grace_seconds: float = TRANSIENT_GRACE_SECONDS,
                 deadline_seconds: float = MANIFEST_DEADLINE_SECONDS):
        self._deadline_seconds = deadline_seconds
        self._cache: dict[tuple, tuple[float, Preflight | tuple[Manifest, str]]] = {}
        self._verified: dict[tuple, tuple[float, tuple[Manifest, str]]] = {}
        self._grace_seconds = grace_seconds
        self._clients: OrderedDict[tuple, object] = OrderedDict()
        self._objects_checked: OrderedDict[tuple, None] = OrderedDict()  # (URI, manifest digest)
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self._cache_seconds = cache_seconds

    def check(self, spec: BerniniDeploymentSpec) -> Preflight:
        fetched = self._fetch(spec)
        if isinstance(fetched, Preflight):
            return fetched
        return judge(spec, *fetched)

    def _fetch(self, spec: BerniniDeploymentSpec) -> Preflight | tuple[Manifest, str]:
        key = (spec.model.artifacts_uri, spec.s3.region, spec.s3.endpoint_url)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # many deployments of one URI share one read
            cached = self._cache.get(key)
            if cached and time.monotonic() - cached[0] < self._cache_seconds:
                return cached[1]
            result = self._read(spec)
            now = time.monotonic()
            if not isinstance(result, Preflight):
                self._verified[key] = (now, result)
            elif result.reason in TRANSIENT_REASONS and key in self._verified:
                verified_at, last_good = self._verified[key]
                if now - verified_at < self._grace_seconds:
                    logger.warning("%s; keeping the manifest verified %.0fs ago", result.message, now - verified_at)
                    result = last_good
            self._cache[key] = (now, result)
        self._forget_beyond(MAX_MANIFESTS)
        return result

    def _forget_beyond(self, limit: int) -> None:
        # Every read passes here: below the limit it costs two len() calls, not a scan of the tables.
        if len(self._cache) <= limit and len(self._verified) <= limit:
            return
        with self._lock:
            for table in (self._cache, self._verified):
                while len(table) > limit:
                    del table[min(table, key=lambda k: table[k][0])]
            for key in [k for k, lock in self._key_locks.items() if k not in self._cache and not lock.locked()]:
                del self._key_locks[key]

    def _client(self, region: str, endpoint_url: str | None):
        key = (region, endpoint_url)
        with self._lock:
            if key in self._clients:
                self._clients.move_to_end(key)
            else:
                self._clients[key] = s3_client(region, endpoint_url, connect_timeout=2, read_timeout=5, attempts=2)
                while len(self._clients) > MAX_CLIENTS:
                    self._clients.popitem(last=False)
            return self._clients[key]

    def _read(self, spec: BerniniDeploymentSpec) -> Preflight | tuple[Manifest, str]:
        location = S3Location.parse(spec.model.artifacts_uri)
        uri = location.uri(MANIFEST_FILE)
        deadline = time.monotonic() + self._deadline_seconds
        try:
            client = self._client(spec.s3.region, spec.s3.endpoint_url)
            body = client.get_object(Bucket=location.bucket, Key=location.key(MANIFEST_FILE))["Body"]
            raw = _read_before(body, MAX_MANIFEST_BYTES + 1, deadline)
        except TimeoutError:
            return Preflight(False, "StoreUnreachable",
                             f"reading {uri} did not finish within {self._deadline_seconds:g}s")
        except ClientError as error:
            kind, code = failure_kind(error)
            if kind == "missing":
                missing = f"bucket {location.bucket}" if code == "NoSuchBucket" else uri
                return Preflight(False, "ManifestNotFound", f"{missing} does not exist")
            if kind == "denied":
                return Preflight(False, "AccessDenied", f"reading {uri} was denied ({code}); check the IAM role")
            return Preflight(False, "StoreError", f"reading {uri} failed: {code}")
        except NoCredentialsError:
            return Preflight(False, "NoCredentials", f"no AWS credentials to read {uri}: give the operator an IAM role")
        except BotoCoreError as error:
            return Preflight(False, "StoreUnreachable", f"reading {uri} failed: {error}")
        if len(raw) > MAX_MANIFEST_BYTES:
            return Preflight(False, "ManifestInvalid", f"{uri} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
        try:
            manifest = parse_manifest(raw)
        except UnsupportedManifestVersion as error:
            return Preflight(False, "UnsupportedManifestVersion", str(error))
        except ValueError as error:
            return Preflight(False, "ManifestInvalid", str(error))
        digest = hashlib.sha256(raw).hexdigest()
        if (uri, digest) not in self._objects_checked:
            problem = _check_listed_objects(client, location, manifest)
            if problem:
                return problem
            self._objects_checked[(uri, digest)] = None
            while len(self._objects_checked) > MAX_MANIFESTS:
                self._objects_checked.popitem(last=False)
        return manifest, digest


def _read_before(body, limit: int, deadline: float) -> bytes:
    """Up to limit bytes of a response body, or TimeoutError once the deadline passed. Each read1 returns what
    one socket read brought, so the deadline holds to within one read timeout however slowly bytes come."""
    stream = body._raw_stream  # urllib3's response; botocore's read(n) would wait for all n bytes
    data = bytearray()
    while len(data) < limit:
        if time.monotonic() > deadline:
            body.close()
            raise TimeoutError()
        chunk = stream.read1(limit - len(data))
        if not chunk:
            break
        data += chunk
    body.close()
    return bytes(data)


def _check_listed_objects(client, location: S3Location, manifest: Manifest) -> Preflight | None:
    """HEAD every object the manifest lists: a missing or different object fails here, not in every init
    container. Size and the published SHA-256 metadata are compared; the puller still hashes every byte."""
    for artifact in manifest.stages.values():
        uri = location.uri(artifact.file)
        try:
            head = client.head_object(Bucket=location.bucket, Key=location.key(artifact.file))
        except ClientError as error:
            kind, code = failure_kind(error)
            if kind == "missing":
                return Preflight(False, "ArtifactMissing", f"{uri} is listed in the manifest but does not exist")
            if kind == "denied":
                return Preflight(False, "AccessDenied", f"reading {uri} was denied ({code}); check the IAM role")
            return Preflight(False, "StoreError", f"reading {uri} failed: {code}")
        except BotoCoreError as error:
            return Preflight(False, "StoreUnreachable", f"reading {uri} failed: {error}")
        differences = head_differences(head, artifact)
        if differences:
            return Preflight(False, "ArtifactMismatch", f"{uri} is not the object the manifest lists: "
                             + "; ".join(differences))
    return None
