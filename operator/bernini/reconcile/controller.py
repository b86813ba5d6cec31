"""One level-based reconcile per BerniniDeployment: preflight, render, apply on drift, status on change."""

import asyncio
import functools
import ipaddress
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from bernini.api import GROUP, KIND, VERSION
from bernini.api import reasons as r
from bernini.api.kuberay import RayServiceStatus, rayservice_status, worker_pods
from bernini.api.reasons import Cause
from bernini.api.spec import BerniniDeploymentSpec
from bernini.api.status import (OPTIONAL_OBSERVATIONS, OPTIONAL_RAY_SERVICE, AbandonedUpgrade, BerniniDeploymentStatus,
                                read_back)
from bernini.artifacts.preflight import BUSY_RETRY_SECONDS, ManifestReader, Preflight, StoreBusy
from bernini.cost.prices import LIST_PRICES, PriceTable
from bernini.domain.capacity import Plan
from bernini.domain.instances import CATALOGUE
from bernini.reconcile import conditions as c
from bernini.reconcile.drift import contains
from bernini.reconcile.kube import Kube, NotLeading, namespace_is_terminating, now, refusal
from bernini.reconcile.metrics import PREFLIGHT_FAILURES, observe_reconcile
from bernini.reconcile.queue import WorkQueue
from bernini.reconcile.pod_health import diagnose
from bernini.reconcile.policy import Policy
from bernini.reconcile.status import Observation, desired_status, invalid_status
from bernini.render.capacity import DoesNotFit, plan
from bernini.render import names
from bernini.render.bounds import bounds_patch
from bernini.render.prewarm import prewarm_daemonset, prewarm_name
from bernini.render import rollback
from bernini.render.rayservice import rayservice_metadata, render_rayservice
from bernini.render.upgrade import (Bounds, Budget, budget, counted_pods, incremental, pending_bounds,
                                    serving_bounds)

Key = tuple[str, str]  # (namespace, name)
logger = logging.getLogger("bernini.controller")

# Every call a reconcile makes has a deadline (API: 5 s connect, 30 s read; a manifest read 15 s): a reconcile
# running longer than this is stuck on something unforeseen, and liveness should restart the operator.
STUCK_SECONDS = 300.0
# RayClusters remembered per BerniniDeployment: the active and the pending one, with room for those being deleted.
MAX_CLUSTERS_PER_DEPLOYMENT = 4
MAX_GROUPS = len(CATALOGUE)  # a rendered RayCluster has a group per allowed instance type at most


def _by_instance_type(pods_by_group: dict[str, int]) -> dict[str, int]:
    """Worker pods by the instance type of each group of ours; other groups are not ours to count."""
    counts: dict[str, int] = {}
    for group, pods in pods_by_group.items():
        instance_type = names.instance_type_of_group(group)
        if instance_type:
            counts[instance_type] = counts.get(instance_type, 0) + pods
    return counts


DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*")


def _host_or_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(DNS_NAME.fullmatch(value))
    return True


class Vanished(Exception):
    """The BerniniDeployment is gone from the API server though no DELETED event said so (a watch relist)."""


def _log(key: Key) -> logging.LoggerAdapter:
    """Per-object logger: kopf's formatters print it as [namespace/name] or as a JSON "object" field."""
    reference = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "namespace": key[0], "name": key[1]}
    return logging.LoggerAdapter(logger, {"k8s_ref": reference, "k8s_skip": True})


def _key(body: dict[str, Any]) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _owner_key(rayservice: dict[str, Any]) -> Key | None:
    for reference in rayservice["metadata"].get("ownerReferences", []):
        if reference.get("kind") == KIND and reference.get("controller"):
            return rayservice["metadata"]["namespace"], reference["name"]
    return None


# What the caches keep of metadata: what the controller, its events and metrics read. Labels and annotations are
# the tenant's to fill (up to 256 KiB each per object): only our own labels stay, for the RayService's drift check.
_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp",
                  "creationTimestamp")
_OUR_LABELS = frozenset(names.labels("-", "-"))


def _lean(body: dict[str, Any]) -> dict[str, Any]:
    """body with only the metadata the controller reads (no managedFields, annotations or foreign labels)."""
    metadata = {key: body["metadata"][key] for key in _KEPT_METADATA if key in body["metadata"]}
    labels = {key: value for key, value in (body["metadata"].get("labels") or {}).items() if key in _OUR_LABELS}
    if labels:
        metadata["labels"] = labels
    controller = [ref for ref in body["metadata"].get("ownerReferences") or [] if ref.get("controller")][:1]
    if controller:  # there is at most one; the rest are the tenant's
        metadata["ownerReferences"] = controller
    return {**body, "metadata": metadata}


# A rendered RayService with its status is a few KiB; a tenant's labelled one may be 1.5 MiB.
MAX_CACHED_BYTES = 256 << 10


class CompactCache(dict):
    """Objects by key as compact JSON: a RayService held as a dict takes about six times its JSON, a
    BerniniDeployment four times (together 80 MiB of dicts at 5,000 objects); decoding one costs ~60 us."""

    def __init__(self, max_bytes: int | None = MAX_CACHED_BYTES):
        super().__init__()
        self.max_bytes = max_bytes

    def put(self, key: Key, body: dict[str, Any]) -> bool:
        """Keep body unless its JSON is over max_bytes (then a reconcile reads it live)."""
        encoded = json.dumps(_lean(body), separators=(",", ":"))
        if self.max_bytes is not None and len(encoded) > self.max_bytes:
            return False
        self[key] = encoded
        return True

    def read(self, key: Key) -> dict[str, Any] | None:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)


def _our_echo(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """after differs from before by no more than the status a reconcile wrote into before (Controller._write_status
    keeps it there): the watch bringing back our own status patch, which asks for no reconcile."""
    if before is None:
        return False
    kept = ("uid", "generation", "deletionTimestamp", "labels")
    return (all(before["metadata"].get(k) == after["metadata"].get(k) for k in kept)
            and before.get("status") == after.get("status"))


def _in_sync(observed: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    return observed is not None and contains(observed, desired)


def _controlled_by(rayservice: dict[str, Any], uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller") for ref in rayservice["metadata"].get("ownerReferences", [])
    )


def _name_conflict(key: Key) -> Cause:
    return Cause(r.NAME_CONFLICT, f"RayService {key[1]} exists and is not controlled by this BerniniDeployment")


def _without_nulls(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if value is not None}


class Controller:
    def __init__(self, kube: Kube, manifests: ManifestReader, workers: int = 4, resync_seconds: float = 60.0,
                 stuck_seconds: float = STUCK_SECONDS, policy: Policy = Policy(), prices: PriceTable = LIST_PRICES):
        self.kube = kube
        self.policy = policy
        self.prices = prices
        self.stuck_seconds = stuck_seconds
        self._running_since: dict[Key, float] = {}
        self.manifests = manifests
        self.workers = workers
        self.resync_seconds = resync_seconds
        # Lean BerniniDeployments (no size limit: each is ours to reconcile); the event loop replaces them, a
        # reconcile puts back the status it wrote only onto the one it read (under the lock), until the watch
        # brings that status.
        self.deployments = CompactCache(max_bytes=None)
        self._deployments_lock = threading.Lock()
        self.rayservices = CompactCache()
        self.queue = WorkQueue()
        self._tasks: list[asyncio.Task] = []
        self._in_threads = 0  # reconciles running on worker threads, which outlive a cancelled task
        self._threads_lock = threading.Lock()
        self._failures: dict[Key, int] = {}
        # The pre-warm DaemonSet last applied per key (None: known absent; no entry: unknown, e.g. after a restart).
        self._prewarms: dict[Key, str | None] = {}
        # The (RayCluster, worker-group bounds) last made to agree per key, so an idle reconcile reads nothing.
        self._bounds: dict[Key, tuple] = {}
        self._surge: dict[Key, tuple] = {}
        # The RayService resourceVersion whose spec status.servingRayServiceSpec last recorded, so an idle
        # reconcile does not encode it again.
        self._recorded: dict[Key, str] = {}
        # Per key, the (pending cluster, pendingSince) whose deadline a timer is set for, and the generation whose
        # upgrade could not be given back (said once).
        self._deadlines: dict[Key, tuple[str, str]] = {}
        self._not_given_back: dict[Key, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Per key, the worker pods KubeRay wants in each RayCluster of its RayService, by instance type: what
        # status.cost counts. KubeRay's RayService status has one total per cluster, left stale when only it changes.
        self.cluster_workers: dict[Key, dict[str, dict[str, int]]] = {}
        # New objects, whose first RayService is created without a read (see _is_new): keys ADDED while we watch
        # and never seen with a RayService, when each key's last event came, and when the latest list began.
        self._new: set[Key] = set()
        self._last_event: dict[Key, float] = {}
        self._listed_since = 0.0
        self._listing = False

    # -- event feeds (called on the event loop) -------------------------------------------------

    def observe_deployment(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            with self._deployments_lock:  # owner references let the garbage collector remove the rest
                self.deployments.pop(key, None)
            self._prewarms.pop(key, None)
            self._bounds.pop(key, None)
            self._surge.pop(key, None)
            self._recorded.pop(key, None)
            self._deadlines.pop(key, None)
            self._not_given_back.pop(key, None)
            self.cluster_workers.pop(key, None)
            self._new.discard(key)
            self._last_event.pop(key, None)
            return
        if event_type == "ADDED":
            self._new.add(key)
        at = time.monotonic()
        if event_type is None and not self._listing:  # kopf marks listed objects with no type
            self._listed_since = at
        self._listing = event_type is None
        self._last_event[key] = at
        after = _lean(body)
        with self._deployments_lock:
            before = self.deployments.read(key)
            self.deployments.put(key, after)
        if not _our_echo(before, after):
            self.queue.add(key)

    def observe_rayservice(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = _key(body)
        owner = _owner_key(body)
        before = self.rayservices.get(key)
        # Only what could be ours is kept, and not past a size ours never reaches: anyone may label a RayService.
        if event_type == "DELETED" or owner != key or not self.rayservices.put(key, body):
            self.rayservices.pop(key, None)
        if owner == key:
            self._new.discard(key)
        # The event of our own apply brings what its response did: nothing new to reconcile.
        if owner in self.deployments and (before is None or self.rayservices.get(key) != before):
            self.queue.add(owner)

    def observe_raycluster(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Keep the worker pods of a RayCluster KubeRay made for a RayService: by instance type, ours only."""
        metadata = body["metadata"]
        owner = next((ref["name"] for ref in metadata.get("ownerReferences") or []
                      if ref.get("controller") and ref.get("kind") == "RayService"), None)
        if owner is None:
            return
        key, cluster = (metadata["namespace"], owner), metadata["name"]
        clusters = self.cluster_workers.setdefault(key, {})
        before = clusters.pop(cluster, None)
        groups = (body.get("spec") or {}).get("workerGroupSpecs")
        # Anyone who may create a RayCluster may make it look like KubeRay's: none is parsed beyond what we render.
        if event_type != "DELETED" and isinstance(groups, list) and len(groups) <= MAX_GROUPS:
            clusters[cluster] = _by_instance_type(worker_pods(body))
            while len(clusters) > MAX_CLUSTERS_PER_DEPLOYMENT:  # the most recently changed are kept
                del clusters[next(iter(clusters))]
        if not clusters:
            del self.cluster_workers[key]
        if clusters.get(cluster) != before and key in self.deployments:
            self.queue.add(key)

    def _workers(self, key: Key, rayservice: RayServiceStatus | None) -> dict[str, int] | None:
        """Instance type -> worker pods over the RayService's active and pending clusters; None while one of them
        was not seen yet."""
        clusters = self.cluster_workers.get(key, {})
        seen = [clusters.get(name) for name in (rayservice.cluster_names if rayservice else [])]
        if not seen or None in seen:
            return None
        workers: dict[str, int] = {}
        for counts in seen:
            for instance_type, pods in counts.items():
                workers[instance_type] = workers.get(instance_type, 0) + pods
        return workers

    # -- workers ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._resync()))

    async def stop(self, drain_seconds: float = 15.0) -> None:
        """Cancel the workers, then wait (bounded) for reconciles already running on threads, which a cancel
        cannot stop: a new leader must not race a write of ours still in progress."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        deadline = time.monotonic() + drain_seconds
        while self._in_threads and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            for key in list(self.deployments):
                self.queue.add(key)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self.queue.get()
            started = loop.time()
            self._running_since[key] = time.monotonic()
            try:
                refused = await asyncio.to_thread(self._counted_reconcile, key)
            except StoreBusy:  # another worker reads this tenant's store: come back, never wait for it
                self.queue.add_after(key, BUSY_RETRY_SECONDS)
                observe_reconcile("refused", loop.time() - started)
            except NotLeading:
                # Either the elector stops this controller next, or a late renewal restores it: then retry.
                _log(key).info("not written: leadership is in doubt")
                self.queue.add_after(key, BUSY_RETRY_SECONDS)
                observe_reconcile("refused", loop.time() - started)
            except Exception as error:
                if namespace_is_terminating(error):
                    _log(key).debug("namespace is being deleted: nothing to reconcile")
                    observe_reconcile("success", loop.time() - started)
                    continue
                _log(key).exception("reconcile failed (attempt %d), retrying in %.0fs", *self._back_off(key))
                observe_reconcile("error", loop.time() - started)
            else:
                if refused:
                    _log(key).warning("%s (attempt %d), retrying in %.0fs", refused, *self._back_off(key))
                else:
                    self._failures.pop(key, None)
                observe_reconcile("refused" if refused else "success", loop.time() - started)
            finally:
                del self._running_since[key]
                self.queue.done(key)

    def stuck(self) -> list[Key]:
        """Reconciles running for longer than stuck_seconds."""
        limit = time.monotonic() - self.stuck_seconds
        return [key for key, since in list(self._running_since.items()) if since < limit]

    def _back_off(self, key: Key) -> tuple[int, float]:
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = min(60.0, 0.5 * 2**failures)
        self.queue.add_after(key, delay)
        return failures, delay

    # -- the reconcile (runs in a worker thread) ------------------------------------------------

    def _counted_reconcile(self, key: Key) -> str | None:
        with self._threads_lock:
            self._in_threads += 1
        try:
            return self.reconcile(key)
        finally:
            with self._threads_lock:
                self._in_threads -= 1

    def reconcile(self, key: Key) -> str | None:
        """One pass; returns the reason a write was refused when only a later retry can tell (else None)."""
        raw = self.deployments.get(key)
        try:
            return self._reconcile(key, raw)
        except Vanished:
            with self._deployments_lock:  # not one of that name created again meanwhile
                if self.deployments.get(key) is raw:
                    self.deployments.pop(key, None)
            _log(key).info("gone from the API server; forgotten")
            return None

    def _reconcile(self, key: Key, raw: str | None) -> str | None:
        body = None if raw is None else json.loads(raw)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        namespace, name = key
        metadata = body["metadata"]
        observed = self.rayservices.read(key)
        current = read_back(body.get("status"))
        capacity, blocked, desired = None, None, None
        try:
            spec = BerniniDeploymentSpec.model_validate(body.get("spec", {}))
        except ValidationError as error:
            # Admission normally refuses these; an older CRD in the cluster may not.
            problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
            self._write_status(raw, body, None, current, Observation(metadata.get("generation", 0),
                               Preflight(False, Cause(r.INVALID_SPEC, problems)), None, None,
                               rayservice_status(observed)))
            return None
        denied = self.policy.violations(spec)
        preflight = (Preflight(False, Cause(r.POLICY_DENIED, "; ".join(denied))) if denied
                     else self.manifests.check(spec, namespace))
        if not preflight.ok:
            PREFLIGHT_FAILURES.labels(preflight.cause.reason).inc()
        before = rayservice_status(observed)
        # An incremental upgrade's baseline (render/upgrade.py), carried while its pending cluster is the same.
        serving_pods = self._serving_pods(key, spec, before, current)
        abandoned = self._abandoned(key, body, spec, current, before)
        record = self._record(key, metadata["uid"], observed, current, abandoned)
        upgrade_budget = None
        if abandoned:
            observed, blocked = self._give_back(key, metadata["uid"], spec, observed, record)
            try:
                capacity = plan(spec)
            except DoesNotFit:
                pass
        elif preflight.ok:
            try:
                capacity = plan(spec)
                upgrade_budget = budget(spec, capacity, serving_pods or 0) if incremental(spec) else None
                desired = render_rayservice(name, namespace, metadata["uid"], spec, preflight.manifest,
                                            preflight.manifest_sha256, capacity, upgrade_budget)
            except DoesNotFit as error:
                blocked = Cause(error.reason, str(error))
            else:
                observed, blocked = self._converge(key, metadata["uid"], observed, desired)
        rayservice = rayservice_status(observed)
        switched = rayservice.switched_cluster if rayservice else ""
        # The serving RayCluster, read at most once per reconcile (bounds and version both ask for it).
        serving_cluster = functools.cache(lambda: self.kube.read_raycluster(namespace, switched) if switched else None)
        if desired is not None and blocked is None and not spec.suspend and not abandoned:
            self._sync_bounds(key, self._bounds, serving_bounds(spec, capacity), switched, serving_cluster)
            pending = rayservice.pending_service_status.ray_cluster_name if rayservice else ""
            if pending and upgrade_budget and serving_pods is not None:
                self._hold_surge(key, spec, capacity, upgrade_budget, rayservice, pending)
        serving = self._serving_version(spec, current, serving_cluster)
        # Status records the baseline only once the serving cluster was seen.
        baseline_pods = upgrade_budget.pods if upgrade_budget and serving_pods is not None else 0
        self._write_status(raw, body, spec, current, Observation(metadata.get("generation", 0), preflight, capacity,
                                                            blocked, rayservice, serving,
                                                            self._pod_trouble(namespace, spec, rayservice),
                                                            self._workers(key, rayservice),
                                                            self._gateway_address(key, spec, observed),
                                                            baseline_pods, abandoned, record))
        self._prewarm(key, body, spec, preflight, serving or current.model_version, bool(abandoned))
        # A refusal no event of ours will end (a webhook removed, KubeRay installed later) is noticed by backing off.
        return blocked.reason if blocked and r.is_retried(blocked.reason) else None

    def _prewarm(self, key: Key, body: dict[str, Any], spec: BerniniDeploymentSpec, preflight: Preflight,
                 serving_version: str, abandoned: bool) -> None:
        """The pre-warm DaemonSet exists while the spec's version does not serve yet (status.modelVersion, just
        written) and was not given back; written only when that changes, and only ever onto a DaemonSet this
        object controls."""
        namespace, name = key
        enabled = bool(spec.artifacts_cache and spec.artifacts_cache.prewarm)
        rolling_out = (preflight.ok and not spec.suspend and not abandoned
                       and serving_version != spec.model.version)
        if enabled and rolling_out:
            desired = prewarm_daemonset(name, namespace, body["metadata"]["uid"], spec, preflight.manifest,
                                        preflight.manifest_sha256)
            fingerprint = json.dumps(desired, sort_keys=True)
            if self._prewarms.get(key) == fingerprint:
                return
            live = self._own_prewarm(key, body)
            if live is not False and self._write_prewarm(
                    key, body, fingerprint, lambda: self.kube.apply_daemonset(desired, live and live["metadata"]["uid"])):
                _log(key).info("pre-warming the node caches with %s", spec.model.version)
        # Unknown (a restart) is worth one delete only where a DaemonSet may have been left.
        elif self._prewarms.get(key, "unknown" if enabled else None) is not None:
            live = self._own_prewarm(key, body)
            if not live:
                self._prewarms[key] = None
            elif self._write_prewarm(key, body, None, lambda: self.kube.delete_daemonset(
                    namespace, prewarm_name(name), live["metadata"]["uid"])):
                _log(key).info("pre-warm DaemonSet gone: %s", "suspended" if spec.suspend else "the version serves")

    def _own_prewarm(self, key: Key, body: dict[str, Any]) -> dict[str, Any] | None | bool:
        """The live pre-warm DaemonSet if this object controls it, None if there is none, False (reported once
        per spec) if a DaemonSet of that name belongs to someone else: it is never applied over nor deleted."""
        live = self.kube.read_daemonset(key[0], prewarm_name(key[1]))
        if live is None or _controlled_by(live, body["metadata"]["uid"]):
            return live
        if self._prewarms.get(key) != "foreign":
            message = (f"DaemonSet {prewarm_name(key[1])} exists and is not controlled by this BerniniDeployment: "
                       "no pre-warm (rename or remove that DaemonSet)")
            _log(key).warning(message)
            self.kube.post_event(body, "Warning", r.PREWARM_NAME_CONFLICT, message)
            self._prewarms[key] = "foreign"
        return False

    def _write_prewarm(self, key: Key, body: dict[str, Any], state: str | None, write) -> bool:
        """write(), then remember state. A refusal is remembered too, reported once and not retried until the
        spec changes: it never holds up the rollout. Other errors propagate (the reconcile's retry writes again)."""
        written = True
        try:
            write()
        except ApiException as error:
            refused = refusal(error)
            if refused is None:
                raise
            message = f"the pre-warm DaemonSet {prewarm_name(key[1])} was refused: {refused.message}"
            _log(key).warning(message)
            self.kube.post_event(body, "Warning", r.PREWARM_REFUSED, message)
            written = False
        self._prewarms[key] = state
        return written

    def _pod_trouble(self, namespace: str, spec: BerniniDeploymentSpec, rayservice: RayServiceStatus | None,
                     ) -> Cause | None:
        clusters = [] if spec.suspend or rayservice is None else rayservice.starting_clusters  # suspended: no pods
        if not clusters:
            return None
        return diagnose(self.kube.list_pods(namespace, f"ray.io/cluster in ({','.join(clusters)})"))

    def _sync_bounds(self, key: Key, written: dict[Key, tuple], wanted: Bounds, cluster: str,
                     read_cluster: Callable[[], dict[str, Any] | None]) -> None:
        """A RayCluster's worker groups get the wanted bounds, which KubeRay never carries to a running cluster
        (render/bounds.py); `written` remembers what each deployment's cluster was last given."""
        if not cluster or written.get(key) == (cluster, wanted):
            return
        live = read_cluster()
        if live is None:
            return
        operations = bounds_patch(live, wanted)
        if operations:
            try:
                self.kube.patch_raycluster(key[0], cluster, operations)
            except ApiException as error:
                if error.status in (409, 422):  # the autoscaler wrote first: the next reconcile computes it again
                    return
                refused = refusal(error)
                if refused is None:
                    raise
                # An older chart's RBAC may not allow it: said once per spec, and serving goes on.
                _log(key).warning("the bounds of RayCluster %s could not be set: %s", cluster, refused.message)
            else:
                _log(key).info("worker-group bounds of RayCluster %s set to %s", cluster, wanted)
        written[key] = (cluster, wanted)

    def _serving_pods(self, key: Key, spec: BerniniDeploymentSpec, rayservice: RayServiceStatus | None,
                      current: BerniniDeploymentStatus) -> int | None:
        """The counted pods an incremental deployment's budget starts from: those its serving cluster asks for
        now or, during an upgrade, those recorded when it began (status keeps them over a restart); None while
        the serving cluster has not been seen."""
        if not incremental(spec) or rayservice is None:
            return 0
        pending, recorded = rayservice.pending_service_status.ray_cluster_name, current.ray_service
        if pending and recorded.pending_cluster == pending and recorded.upgrade_baseline_pods:
            return recorded.upgrade_baseline_pods
        active = rayservice.active_service_status.ray_cluster_name
        if not active:
            return 0
        serving = self.cluster_workers.get(key, {}).get(active)
        return None if serving is None else counted_pods(spec, serving)

    def _hold_surge(self, key: Key, spec: BerniniDeploymentSpec, capacity: Plan, upgrade_budget: Budget,
                    rayservice: RayServiceStatus, pending: str) -> None:
        """An incremental upgrade's new cluster may ask only as many accelerator pods as its budget leaves beside
        every other cluster of the deployment (render/upgrade.py); recomputed on every event of any of them. The
        first cluster (none active) replaces nothing and gets all of the serving bounds. Only a cluster our watch
        holds (made by KubeRay for this RayService) is patched."""
        clusters = self.cluster_workers.get(key, {})
        new = clusters.get(pending)
        if new is None:
            return  # not seen yet: its event queues the next reconcile
        if rayservice.active_service_status.ray_cluster_name:
            others = sum(counted_pods(spec, pods) for name, pods in clusters.items() if name != pending)
            wanted = pending_bounds(spec, capacity, upgrade_budget, others, new)
        else:
            wanted = serving_bounds(spec, capacity)
        self._sync_bounds(key, self._surge, wanted, pending,
                          lambda: self.kube.read_raycluster(key[0], pending))

    def _abandoned(self, key: Key, body: dict[str, Any], spec: BerniniDeploymentSpec,
                   current: BerniniDeploymentStatus, rayservice: RayServiceStatus | None) -> AbandonedUpgrade | None:
        """The upgrade of this generation given back (render/rollback.py): as status recorded it, or now, when its
        pending cluster does not serve by its deadline and the record of the serving spec matches what serves.
        The decision is written to status before anything is rolled back, so a failed write leaves nothing half
        done."""
        generation = body["metadata"].get("generation", 0)
        given_back = current.abandoned_upgrade
        if given_back and given_back.generation == generation:
            return given_back
        pending = rayservice.pending_service_status.ray_cluster_name if rayservice else ""
        since = current.ray_service.pending_since
        if (not pending or not rayservice.active_service_status.ray_cluster_name or rollback.serving_share(rayservice)
                or current.ray_service.pending_cluster != pending or not rollback.parses(since)):
            return None  # nothing to give back, or the deadline's start is not on record yet
        at = now()
        left = rollback.seconds_left(since, spec.upgrade_strategy.deadline_seconds, at)
        if left > 0:
            if self._loop is not None and self._deadlines.get(key) != (pending, since):
                self._deadlines[key] = (pending, since)  # come back at the deadline, not at the next resync
                self._loop.call_soon_threadsafe(self.queue.add_after, key, left + 1)
            return None
        live = self.kube.read_rayservice(*key)  # the cache may lag: KubeRay may have just switched
        live_status = rayservice_status(live)
        if (live is None or not _controlled_by(live, body["metadata"]["uid"])
                or live_status.pending_service_status.ray_cluster_name != pending
                or rollback.serving_share(live_status)):
            return None
        mismatch = self._record_mismatch(key, live, current.serving_ray_service_spec)
        if mismatch:
            if self._not_given_back.get(key) != generation:
                self._not_given_back[key] = generation
                message = (f"the upgrade to {spec.model.version} passed its {spec.upgrade_strategy.deadline_seconds}s "
                           f"deadline but is not given back: {mismatch}; revert the spec by hand")
                _log(key).warning(message)
                self.kube.post_event(body, "Warning", r.UPGRADE_NOT_GIVEN_BACK, message)
            return None
        why = rollback.why_not_serving(self._pod_trouble(key[0], spec, live_status), live_status)
        given_back = AbandonedUpgrade(generation=generation, model_version=spec.model.version, at=at,
                                      message=c.bounded(why, 4096))
        self.kube.patch_status(*key, {"abandonedUpgrade": given_back.model_dump(mode="json")})
        _log(key).warning("upgrade to %s given back at its deadline: %s", spec.model.version, why)
        return given_back

    def _record_mismatch(self, key: Key, rayservice: dict[str, Any], record: str) -> str:
        """Why record may not be applied (rollback.mismatch; "" when it may), the RayService's active cluster
        read, and ours only if KubeRay made it for this RayService."""
        recorded = rollback.decode(record)
        active = rayservice_status(rayservice).active_service_status.ray_cluster_name
        cluster = self.kube.read_raycluster(key[0], active) if recorded and active else None
        if cluster and not _controlled_by(cluster, rayservice["metadata"]["uid"]):
            return f"RayCluster {active} is not controlled by the RayService"
        return rollback.mismatch(recorded, cluster)

    def _record(self, key: Key, uid: str, observed: dict[str, Any] | None, current: BerniniDeploymentStatus,
                abandoned: AbandonedUpgrade | None) -> str:
        """status.servingRayServiceSpec: the spec of our RayService once KubeRay has settled on it under a strategy
        that rolls, else the one recorded. Never while an upgrade is given back: its interim spec runs nowhere."""
        if (abandoned or not rollback.settled(observed) or not _controlled_by(observed, uid)
                or rollback.strategy_type(observed) == rollback.NO_NEW_CLUSTER):
            return current.serving_ray_service_spec
        version = observed["metadata"].get("resourceVersion", "")
        if self._recorded.get(key) == version and current.serving_ray_service_spec:
            return current.serving_ray_service_spec
        encoded = rollback.encode(observed["spec"])
        if len(encoded) > rollback.MAX_RECORD_CHARS:
            return current.serving_ray_service_spec
        self._recorded[key] = version
        return encoded

    def _give_back(self, key: Key, uid: str, spec: BerniniDeploymentSpec, observed: dict[str, Any] | None,
                   record: str) -> tuple[dict[str, Any] | None, Cause | None]:
        """Hold the RayService at the recorded spec while this generation's upgrade is given back. NewCluster:
        prepare nothing new (strategy None) until KubeRay has settled without the pending cluster, which is
        cleared from its status; Incremental: the strategy in flight, so that KubeRay rolls back itself."""
        recorded = rollback.decode(record)
        if recorded is None or observed is None:
            return observed, None  # nothing readable to go back to: what runs stays as it is
        if spec.upgrade_strategy.type == "NewCluster":
            strategy = {"type": "NewCluster"} if rollback.settled(observed) else {"type": rollback.NO_NEW_CLUSTER}
        else:
            strategy = observed["spec"].get("upgradeStrategy") or recorded.get("upgradeStrategy") or {}
        desired = rollback.rollback_rayservice(rayservice_metadata(key[1], key[0], uid), recorded, observed["spec"],
                                               strategy)
        mismatch = "" if _in_sync(observed, desired) else self._record_mismatch(key, observed, record)
        if mismatch:
            _log(key).warning("the record of the serving spec is not applied: %s", mismatch)
            return observed, None
        observed, blocked = self._converge(key, uid, observed, desired)
        if blocked is None and spec.upgrade_strategy.type == "NewCluster":
            self._clear_pending(key, observed)
        return observed, blocked

    def _clear_pending(self, key: Key, observed: dict[str, Any] | None) -> None:
        """Once our RayService asks KubeRay to prepare nothing new, its pending cluster is cleared from KubeRay's
        status (render/rollback.py)."""
        status = rayservice_status(observed)
        pending = status.pending_service_status.ray_cluster_name if status else ""
        if not pending or rollback.strategy_type(observed) != rollback.NO_NEW_CLUSTER:
            return
        try:
            self.kube.clear_pending_cluster(*key, observed["metadata"]["uid"], pending)
        except ApiException as error:
            if error.status not in (404, 409, 422):  # gone, changed or already cleared: the next event tells
                raise
            return
        _log(key).info("RayCluster %s given back: cleared from the RayService's pending status", pending)

    def _gateway_address(self, key: Key, spec: BerniniDeploymentSpec, rayservice: dict[str, Any] | None) -> str:
        """The first address the incremental RayService's own Gateway reports (its controller writes it); a
        Gateway of that name that KubeRay did not make for this RayService is not read from."""
        if rayservice is None or not incremental(spec):
            return ""
        try:
            gateway = self.kube.read_gateway(key[0], names.gateway_name(key[1])) or {}
        except ApiException as error:
            if refusal(error) is None:
                raise
            return ""  # an older chart's RBAC: no endpoint in status, and serving goes on
        if not gateway or not _controlled_by(gateway, rayservice["metadata"]["uid"]):
            return ""
        addresses = (gateway.get("status") or {}).get("addresses")
        first = addresses[0] if isinstance(addresses, list) and addresses else None
        value = first.get("value") if isinstance(first, dict) else None
        # Whoever may write the Gateway's status writes this: only a host name or an IP address is shown.
        return value if isinstance(value, str) and _host_or_ip(value) else ""

    def _serving_version(self, spec: BerniniDeploymentSpec, current: BerniniDeploymentStatus,
                         read_cluster: Callable[[], dict[str, Any] | None]) -> str | None:
        """Read the switched-to RayCluster's version only while status does not yet name the spec's version:
        an idle reconcile reads nothing."""
        if current.model_version == spec.model.version:
            return None
        raycluster = read_cluster()
        return names.model_version_of(raycluster) if raycluster else None

    def _converge(self, key: Key, uid: str, observed: dict[str, Any] | None, desired: dict[str, Any]):
        if _in_sync(observed, desired):
            return observed, None
        if observed is None and self._is_new(key):
            # Created without a read: a create cannot merge into a RayService of that name (Kube.create_rayservice).
            return self._write(key, uid, None, desired)
        observed = self.kube.read_rayservice(*key)  # the cache may lag our own last write
        if observed is not None and not _controlled_by(observed, uid):
            return observed, self._conflict(key)
        if _in_sync(observed, desired):
            return observed, None
        if observed is None:
            self._confirm_still_there(key, uid)  # a create is the one write a missed delete could resurrect
        return self._write(key, uid, observed, desired)

    def _write(self, key: Key, uid: str, observed: dict[str, Any] | None, desired: dict[str, Any]):
        """Update observed (ours, checked) or create; a RayService in the way is read to say whose it is."""
        try:
            if observed:
                self.kube.own_as_applier(observed)
                applied = self.kube.apply_rayservice(desired, observed["metadata"]["uid"])
            else:
                applied = self.kube.create_rayservice(desired)
        except ApiException as error:
            # 409 or 422: the RayService of that name is not the one written to (a create met one, ours was
            # replaced) or an apply met a conflict
            current = self.kube.read_rayservice(*key) if error.status in (409, 422) else None
            if current is not None and not _controlled_by(current, uid):
                return current, self._conflict(key)
            if current is not None and observed is None:  # ours, not seen yet (a new object's at a restart)
                return (current, None) if _in_sync(current, desired) else self._write(key, uid, current, desired)
            refused = refusal(error)
            if refused is None:
                raise
            return observed, refused
        if not self.rayservices.put(key, applied):
            self.rayservices.pop(key, None)
        self._new.discard(key)
        _log(key).info("%s RayService", "updated" if observed else "created")
        return applied, None

    def _conflict(self, key: Key) -> Cause:
        self._new.discard(key)  # from now on it is read before any write
        return _name_conflict(key)

    def _is_new(self, key: Key) -> bool:
        """Created while we watch and never seen with a RayService, and no list since its last event: a list (kopf
        lists again after 410 Gone) does not report what was deleted meanwhile, so the object may be gone."""
        return key in self._new and self._last_event.get(key, -math.inf) >= self._listed_since  # DELETED may pop it

    def _confirm_still_there(self, key: Key, uid: str) -> None:
        live = self.kube.read_deployment(*key)
        if live is None or live["metadata"]["uid"] != uid or live["metadata"].get("deletionTimestamp"):
            raise Vanished()

    def _write_status(self, raw: str, body: dict[str, Any], spec: BerniniDeploymentSpec | None,
                      current: BerniniDeploymentStatus, seen: Observation) -> None:
        """body: decoded from raw, the cached JSON; current: its status as read back at the start of this reconcile."""
        namespace, name = _key(body)
        stored = body.get("status") or {}
        if spec is None:
            status, transitions = invalid_status(current, seen, now())
        else:
            status, transitions = desired_status(name, namespace, spec, seen, current, now(), self.prices)
        if _without_nulls(status) == _without_nulls(stored):
            return
        patch = {**dict.fromkeys(OPTIONAL_OBSERVATIONS), **status}  # JSON merge patch: null removes
        if "rayService" in status:  # merged member by member: its optional members are removed the same way
            patch["rayService"] = {**dict.fromkeys(OPTIONAL_RAY_SERVICE), **status["rayService"]}
        try:
            self.kube.patch_status(namespace, name, patch)
        except ApiException as error:
            if error.status == 404:
                raise Vanished() from error
            refused = refusal(error)
            if refused and not self._failures.get((namespace, name)):  # one Event per run of failures
                self.kube.post_event(body, "Warning", r.STATUS_REFUSED, f"the status patch was refused: {refused.message}")
            raise
        body["status"] = status
        with self._deployments_lock:  # until the watch delivers our own write; never over a newer event's body
            if self.deployments.get((namespace, name)) is raw:
                self.deployments.put((namespace, name), body)
        posted = set()  # Ready repeats the failing condition's reason: one Event tells it
        for transition in transitions:
            judgement = transition.after
            message = c.bounded(f"{judgement.type} is {judgement.status}: {judgement.cause.message}")
            event_type = c.event_type(transition)
            if event_type and (event_type, judgement.cause) not in posted:
                posted.add((event_type, judgement.cause))
                self.kube.post_event(body, event_type, judgement.cause.reason, message)
                _log((namespace, name)).info(message)
