"""The elector's rounds against a stand-in Lease API (a fake, named so: the real API server is in
tests/integration/test_leader_election.py). Only the failure shapes that a real server cannot be made to produce
on demand are checked here: urllib3's own errors, a round that hangs, a release during an outage."""

import asyncio
import time

import pytest
from kubernetes import client
from urllib3.exceptions import MaxRetryError, ProtocolError

from bernini.reconcile.leader import LeaderElector, Timing


class FakeLeaseApi:
    """Answers with whatever the test queued: a V1Lease, an exception to raise, or a number of seconds to hang."""

    def __init__(self):
        self.lease = None
        self.failure: BaseException | float | None = None

    def _answer(self):
        if isinstance(self.failure, float):
            time.sleep(self.failure)
        elif self.failure is not None:
            raise self.failure

    def read_namespaced_lease(self, name, namespace, **_):
        self._answer()
        if self.lease is None:
            raise client.ApiException(status=404)
        return self.lease

    def create_namespaced_lease(self, namespace, body, **_):
        self._answer()
        self.lease = body

    def replace_namespaced_lease(self, name, namespace, body, **_):
        self._answer()
        self.lease = body


def _elector(fake: FakeLeaseApi, timing=Timing(lease_seconds=3, renew_deadline_seconds=1.0, retry_seconds=0.1)):
    elector = LeaderElector(client.ApiClient(), "ns", "lease", "me", timing)
    elector.coordination = fake
    return elector


@pytest.mark.parametrize("failure", [
    MaxRetryError(None, "/", "connection refused"), ProtocolError("Connection aborted.", ConnectionResetError()),
    RuntimeError("anything else"),
])
def test_a_failed_round_is_lost_not_the_end_of_the_election(failure):
    fake = FakeLeaseApi()
    fake.failure = failure
    elector = _elector(fake)
    assert elector._try_acquire() is False
    fake.failure = None
    assert elector._try_acquire() is True, "the next round must still run and win a free Lease"


def test_a_leader_stops_writing_once_renewals_fail_and_steps_down():
    fake = FakeLeaseApi()
    elector = _elector(fake)
    events = []

    async def scenario():
        async def elected():
            events.append(("elected", elector.leading()))
            fake.failure = MaxRetryError(None, "/", "the API server went away")

        async def lost():
            events.append(("lost", elector.leading()))

        started = time.monotonic()
        await asyncio.wait_for(elector.run(elected, lost), timeout=5)
        return time.monotonic() - started

    seconds = asyncio.run(scenario())
    assert events == [("elected", True), ("lost", False)]
    assert seconds < 1.0 + 0.5, "on_lost must come within the renew deadline"


def test_a_hanging_renewal_ends_leadership_at_the_renew_deadline():
    fake = FakeLeaseApi()
    elector = _elector(fake)

    async def scenario():
        async def elected():
            fake.failure = 3.0  # every later call hangs for 3 s, past the 1 s renew deadline

        async def lost():
            pass

        runner = asyncio.create_task(elector.run(elected, lost))
        await asyncio.sleep(0.05)
        assert elector.leading()
        started = time.monotonic()
        while elector.leading():
            await asyncio.sleep(0.01)
        in_doubt_after = time.monotonic() - started
        await asyncio.wait_for(runner, timeout=5)
        return in_doubt_after

    assert asyncio.run(scenario()) < 1.1


def test_release_during_an_outage_returns_and_stops_writes():
    fake = FakeLeaseApi()
    elector = _elector(fake)
    assert elector._try_acquire()
    elector._renewed_at = time.monotonic()
    fake.failure = MaxRetryError(None, "/", "connection refused")
    elector.release()  # must not raise
    assert not elector.leading()
