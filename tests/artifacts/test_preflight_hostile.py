"""A tenant's store against the operator's preflight: every exchange has one deadline and one byte cap (status
line, headers and error bodies included), a HEAD answer missing what we read is a condition, and one tenant's
hanging store holds at most one worker. The stores are FAKES on loopback (tests/fake_stores.py): versitygw
cannot be made to misbehave."""

import os
import threading
import time
from pathlib import Path

import pytest

from bernini.artifacts.preflight import READS_PER_NAMESPACE, ManifestReader, StoreBusy
from tests.fake_stores import (EndlessErrorStore, HeaderTricklingStore, ManifestThen, TricklingStore, serving,
                               trickling_tls_handshake)
from tests.unit.specs import make_manifest, make_spec


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    """Signing needs some credentials; these fakes check none. The chain must never dial IMDS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _spec(server, bucket="artifacts"):
    return make_spec(model={"artifactsUri": f"s3://{bucket}/bernini/1.0.0/"},
                     s3={"region": "us-east-1", "endpointUrl": f"http://127.0.0.1:{server.server_address[1]}"})


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _manifest_store(head):
    handler = type("Store", (ManifestThen,), {"manifest": make_manifest().model_dump_json(by_alias=True).encode(),
                                              "do_HEAD": head})
    return serving(handler)


def test_an_endless_error_body_is_read_only_to_the_cap():
    server = serving(EndlessErrorStore)
    before, started = _rss_mib(), time.monotonic()
    try:
        result = ManifestReader(cache_seconds=0).check(_spec(server))
    finally:
        server.shutdown()
    took, grown = time.monotonic() - started, _rss_mib() - before
    print(f"\n503 with an endless body: {result.cause.reason} in {took:.2f}s, RSS +{grown:.1f} MiB")
    assert (result.ok, result.cause.reason) == (False, "StoreError") and "503" in result.cause.message
    assert took < 3 and grown < 32


@pytest.mark.parametrize("store", [HeaderTricklingStore, TricklingStore])
def test_a_store_that_trickles_headers_or_body_is_given_up_on_at_one_deadline(store):
    server = serving(store)
    started = time.monotonic()
    try:
        result = ManifestReader(cache_seconds=0, deadline_seconds=2).check(_spec(server))
    finally:
        server.shutdown()
    took = time.monotonic() - started
    print(f"\n{store.__name__}: {result.cause.reason} after {took:.1f}s (deadline 2 s)")
    assert (result.ok, result.cause.reason) == (False, "StoreUnreachable") and "within 2s" in result.cause.message
    assert took < 3


def test_a_tls_handshake_trickled_a_byte_at_a_time_ends_at_the_deadline():
    listener, stop = trickling_tls_handshake()
    spec = make_spec(model={"artifactsUri": "s3://artifacts/bernini/1.0.0/"},
                     s3={"region": "us-east-1", "endpointUrl": f"https://127.0.0.1:{listener.getsockname()[1]}"})
    started = time.monotonic()
    try:
        result = ManifestReader(cache_seconds=0, deadline_seconds=2).check(spec)
    finally:
        stop.set()
        listener.close()
    took = time.monotonic() - started
    assert (result.ok, result.cause.reason) == (False, "StoreUnreachable") and "within 2s" in result.cause.message
    assert took < 3, f"the handshake held the read for {took:.1f}s"


def test_a_head_that_trickles_its_headers_ends_at_the_same_deadline():
    server = _manifest_store(HeaderTricklingStore.do_GET)
    started = time.monotonic()
    try:
        result = ManifestReader(cache_seconds=0, deadline_seconds=2).check(_spec(server))
    finally:
        server.shutdown()
    took = time.monotonic() - started
    assert (result.ok, result.cause.reason) == (False, "StoreUnreachable")
    assert took < 3, f"the HEADs took {took:.1f}s: each had its own clock"


@pytest.mark.parametrize("length", [None, "\u00b2"], ids=["absent", "superscript two"])
def test_a_head_answer_without_a_usable_length_is_a_mismatch_not_a_crash(length):
    """"\u00b2": str.isdigit() says yes, int() refuses."""
    def head(handler):
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", length)
        handler.send_header("Connection", "close")
        handler.end_headers()
    server = _manifest_store(head)
    try:
        result = ManifestReader(cache_seconds=0).check(_spec(server))
    finally:
        server.shutdown()
    assert (result.ok, result.cause.reason) == (False, "ArtifactMismatch") and "gave no size" in result.cause.message


def test_one_tenants_hanging_store_holds_one_worker_and_others_are_not_slowed():
    """Four reconciles of one namespace on a store that never answers: one waits out the deadline, the others
    return StoreBusy at once; another namespace's preflight meanwhile takes its usual time."""
    hanging = serving(HeaderTricklingStore)
    fine = _manifest_store(lambda handler: (handler.send_response(200),
                                            handler.send_header("Content-Length", str(1 << 20)),
                                            handler.end_headers()))
    reader = ManifestReader(cache_seconds=0, deadline_seconds=3)
    outcomes = []

    def check_evil():
        started = time.monotonic()
        try:
            outcomes.append((reader.check(_spec(hanging), "evil").cause.reason, time.monotonic() - started))
        except StoreBusy:
            outcomes.append(("StoreBusy", time.monotonic() - started))
    try:
        threads = [threading.Thread(target=check_evil) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        other = reader.check(_spec(fine), "good")
        other_seconds = time.monotonic() - started
        for thread in threads:
            thread.join(10)
    finally:
        hanging.shutdown()
        fine.shutdown()
    print(f"\nhanging store: {sorted(outcomes)}; the other tenant's preflight {other_seconds * 1000:.0f} ms")
    assert other.ok, other.cause.message
    assert other_seconds < 1.0
    assert sorted(reason for reason, _ in outcomes) == ["StoreBusy"] * 3 + ["StoreUnreachable"]
    assert all(seconds < 0.5 for reason, seconds in outcomes if reason == "StoreBusy")


def test_one_tenants_hanging_stores_hold_at_most_its_share_of_the_workers():
    """Four hanging stores of one namespace: READS_PER_NAMESPACE of them are read (and wait out the deadline),
    the rest are StoreBusy at once."""
    stores = [serving(HeaderTricklingStore) for _ in range(4)]
    reader = ManifestReader(cache_seconds=0, deadline_seconds=2)
    outcomes = []

    def check(server):
        try:
            outcomes.append(reader.check(_spec(server), "evil").cause.reason)
        except StoreBusy:
            outcomes.append("StoreBusy")
    threads = [threading.Thread(target=check, args=(server,)) for server in stores]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(10)
    finally:
        for server in stores:
            server.shutdown()
    assert sorted(outcomes) == ["StoreBusy"] * (4 - READS_PER_NAMESPACE) + ["StoreUnreachable"] * READS_PER_NAMESPACE


def test_an_outage_after_a_verification_keeps_it_and_says_so():
    """However long the outage: the grace period that used to end after 600 s is gone."""
    def head(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(1 << 20))
        handler.end_headers()
    server = _manifest_store(head)
    reader = ManifestReader(cache_seconds=0, deadline_seconds=1)
    try:
        assert reader.check(_spec(server)).ok
    finally:
        server.shutdown()
        server.server_close()
    kept = reader.check(_spec(server))  # the store is gone now: connection refused
    assert kept.ok and kept.cause.reason == "Verified"
    assert "the last re-check failed, kept" in kept.cause.message



def test_a_bucket_in_another_region_names_that_region():
    """S3 answers 301 with x-amz-bucket-region when asked in the wrong region (a FAKE answer of that shape)."""
    def redirect(handler):
        handler.send_response(301)
        handler.send_header("x-amz-bucket-region", "eu-west-1")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    handler = type("WrongRegion", (ManifestThen,), {"do_GET": redirect})
    server = serving(handler)
    try:
        result = ManifestReader(cache_seconds=0).check(_spec(server))
    finally:
        server.shutdown()
    assert (result.ok, result.cause.reason) == (False, "StoreError")
    assert "the bucket is in eu-west-1: set spec.s3.region to eu-west-1" in result.cause.message
