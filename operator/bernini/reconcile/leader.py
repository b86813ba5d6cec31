"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it: one operator replica
writes, the others watch and wait. kopf's peering only pauses handlers and is not a lock.

Expiry is judged by this process's own clock from when it last saw the record change (never by comparing
timestamps written by another machine), and every write carries the resourceVersion it read, so two
candidates cannot both win one round.

A leader may write only while its last successful renewal *started* less than renew_deadline ago
(`leading()`): a standby takes over lease_seconds after it saw that renewal, which is later still, so the
two never write in the same interval whatever the rounds in between do (fail, hang, raise).
"""

import asyncio
import copy
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bernini.reconcile.metrics import LEADER

logger = logging.getLogger("bernini.leader")
# (connect, read) per call, no retries: a round is two calls and must end well inside the renew deadline.
ELECTION_TIMEOUT = (2.0, 2.5)


@dataclass(frozen=True)
class Timing:
    lease_seconds: float = 15.0  # a standby takes over this long after the leader's last renewal
    renew_deadline_seconds: float = 10.0  # a leader that could not renew for this long stops writing
    retry_seconds: float = 2.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def election_client(api: client.ApiClient) -> client.ApiClient:
    """A client of its own: urllib3 retries (3 by default) and the workers' 30 s read timeout would let one
    renewal outlive the renew deadline, and a pool shared with busy workers could queue it."""
    configuration = copy.deepcopy(api.configuration)
    configuration.retries = False
    own = client.ApiClient(configuration)
    own.user_agent = api.user_agent
    return own


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, timing: Timing = Timing()):
        self.coordination = client.CoordinationV1Api(election_client(api))
        self.namespace, self.name, self.identity, self.timing = namespace, name, identity, timing
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last read
        self._seen_at = 0.0
        self._renewed_at: float | None = None  # monotonic start of the last round that left us holding the Lease
        self.lost = False

    def leading(self) -> bool:
        """True while writes are safe: the last renewal began less than renew_deadline ago."""
        renewed = self._renewed_at
        return (renewed is not None and not self.lost
                and time.monotonic() - renewed < self.timing.renew_deadline_seconds)

    async def run(self, on_elected: Callable[[], Awaitable[None]], on_lost: Callable[[], Awaitable[None]]) -> None:
        """Wait to be elected, call on_elected, renew until renewal fails for renew_deadline, call on_lost."""
        while not await self._round_in_time():
            await asyncio.sleep(self.timing.retry_seconds)
        logger.info("elected leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        LEADER.set(1)
        await on_elected()
        while self.leading():
            await asyncio.sleep(self.timing.retry_seconds)
            await self._round_in_time()
        self.lost = True
        LEADER.set(0)
        logger.error("lost the Lease %s/%s: no renewal for %.0fs", self.namespace, self.name,
                     self.timing.renew_deadline_seconds)
        await on_lost()

    async def _round_in_time(self) -> bool:
        """One round, abandoned (and counted as failed) once the renew deadline passes."""
        started = time.monotonic()
        try:
            held = await asyncio.wait_for(asyncio.to_thread(self._try_acquire),
                                          timeout=self.timing.renew_deadline_seconds)
        except TimeoutError:
            logger.warning("leader election round took over %.0fs", self.timing.renew_deadline_seconds)
            return False
        if held:
            self._renewed_at = started
        return held

    def release(self) -> None:
        """Give the Lease up at a clean shutdown, so a standby takes over at once instead of after expiry.
        Never raises: shutdown must go on during an outage (bounded by the election client's timeouts)."""
        LEADER.set(0)
        if not self.leading():
            return
        self._renewed_at = None
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                            _request_timeout=ELECTION_TIMEOUT)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease,
                                                           _request_timeout=ELECTION_TIMEOUT)
        except Exception as error:  # noqa: BLE001  the Lease then expires by itself
            logger.warning("could not release the Lease: %s", error)

    def _try_acquire(self) -> bool:
        """One round: True when this process holds the Lease afterwards. Any failure (an API error, a refused
        connection, urllib3's protocol errors) is a lost round, never the end of the election."""
        try:
            return self._round()
        except Exception as error:  # noqa: BLE001
            if getattr(error, "status", None) != 409:  # 409: another candidate wrote first
                logger.warning("leader election round failed: %s", getattr(error, "status", None) or error)
            return False

    def _round(self) -> bool:
        now = _now()
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                            _request_timeout=ELECTION_TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease(self.namespace, client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, acquired=now, transitions=0)), _request_timeout=ELECTION_TIMEOUT)
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
        self.coordination.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=ELECTION_TIMEOUT)
        return True

    def _spec(self, now: datetime.datetime, acquired, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=int(self.timing.lease_seconds),
                                  acquire_time=acquired, renew_time=now, lease_transitions=transitions)
