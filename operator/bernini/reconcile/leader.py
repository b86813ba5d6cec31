"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it: one operator replica
writes, the others watch and wait. kopf's peering only pauses handlers and is not a lock.

Expiry is judged by this process's own clock from when it last saw the record change (never by comparing
timestamps written by another machine), and every write carries the resourceVersion it read, so two
candidates cannot both win one round.
"""

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bernini.reconcile.kube import REQUEST_TIMEOUT
from bernini.reconcile.metrics import LEADER

logger = logging.getLogger("bernini.leader")


@dataclass(frozen=True)
class Timing:
    lease_seconds: float = 15.0  # a standby takes over this long after the leader's last renewal
    renew_deadline_seconds: float = 10.0  # a leader that could not renew for this long stops writing
    retry_seconds: float = 2.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, timing: Timing = Timing()):
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity, self.timing = namespace, name, identity, timing
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last read
        self._seen_at = 0.0
        self.lost = False

    async def run(self, on_elected: Callable[[], Awaitable[None]], on_lost: Callable[[], Awaitable[None]]) -> None:
        """Wait to be elected, call on_elected, renew until renewal fails for renew_deadline, call on_lost."""
        while not await asyncio.to_thread(self._try_acquire):
            await asyncio.sleep(self.timing.retry_seconds)
        logger.info("elected leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        LEADER.set(1)
        await on_elected()
        renewed = time.monotonic()
        while time.monotonic() - renewed < self.timing.renew_deadline_seconds:
            await asyncio.sleep(self.timing.retry_seconds)
            if await asyncio.to_thread(self._try_acquire):
                renewed = time.monotonic()
        LEADER.set(0)
        self.lost = True
        logger.error("lost the Lease %s/%s: no renewal for %.0fs", self.namespace, self.name,
                     self.timing.renew_deadline_seconds)
        await on_lost()

    def release(self) -> None:
        """Give the Lease up at a clean shutdown, so a standby takes over at once instead of after expiry."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease,
                                                           _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, OSError) as error:
            logger.warning("could not release the Lease: %s", error)
        LEADER.set(0)

    def _try_acquire(self) -> bool:
        """One round: True when this process holds the Lease afterwards."""
        try:
            return self._round()
        except (ApiException, OSError) as error:
            status = getattr(error, "status", None)
            if status != 409:  # 409: another candidate wrote first; the next round reads its record
                logger.warning("leader election round failed: %s", status or error)
            return False

    def _round(self) -> bool:
        now = _now()
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease(self.namespace, client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, acquired=now, transitions=0)), _request_timeout=REQUEST_TIMEOUT)
            return True
        spec = lease.spec
        record = (spec.holder_identity or "", str(spec.renew_time))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        held_by_other = spec.holder_identity and spec.holder_identity != self.identity
        duration = spec.lease_duration_seconds or self.timing.lease_seconds
        if held_by_other and time.monotonic() - self._seen_at < duration:
            return False
        taking_over = spec.holder_identity != self.identity
        lease.spec = self._spec(now, acquired=now if taking_over else spec.acquire_time,
                                transitions=(spec.lease_transitions or 0) + (1 if held_by_other else 0))
        # The resourceVersion read above makes this a compare-and-swap: of two candidates one gets 409.
        self.coordination.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT)
        return True

    def _spec(self, now: datetime.datetime, acquired, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(self.timing.lease_seconds),
                                  acquire_time=acquired, renew_time=now, lease_transitions=transitions)
