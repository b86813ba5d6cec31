"""The operator's preflight reasons, each produced by a real request to versitygw over loopback, except the one
reply that server cannot be made to send (see the stand-in below)."""

import gc
import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from bernini.artifacts.manifest import MANIFEST_FILE
from bernini.artifacts.preflight import MAX_MANIFEST_BYTES, ManifestReader
from tests.fake_stores import EndlessStore, TricklingStore, serving
from tests.unit.specs import make_spec


@pytest.fixture
def store_spec(s3, local_s3, monkeypatch, request):
    """A spec pointing at a fresh prefix of the local store, with the store's credentials in the environment."""
    for name, value in local_s3.credentials_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # the credential chain must never dial IMDS
    if "artifacts" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="artifacts")
    prefix = f"preflight/{request.node.name}/"

    def spec_for(endpoint_url: str = local_s3.endpoint_url):
        return make_spec(model={"artifactsUri": f"s3://artifacts/{prefix}"},
                         s3={"region": "us-east-1", "endpointUrl": endpoint_url})
    return prefix, spec_for


def _check(spec):
    return ManifestReader(cache_seconds=0).check(spec)


def test_a_missing_manifest_is_ManifestNotFound(store_spec):
    _, spec_for = store_spec
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "ManifestNotFound")
    assert MANIFEST_FILE in result.cause.message


def test_a_manifest_that_is_not_json_is_ManifestInvalid(store_spec, s3):
    prefix, spec_for = store_spec
    s3.put_object(Bucket="artifacts", Key=prefix + MANIFEST_FILE, Body=b"{not json")
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "ManifestInvalid")


def test_a_manifest_over_the_size_cap_is_ManifestInvalid_and_not_read_whole(store_spec, s3):
    prefix, spec_for = store_spec
    s3.put_object(Bucket="artifacts", Key=prefix + MANIFEST_FILE, Body=b" " * (MAX_MANIFEST_BYTES + 4096))
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "ManifestInvalid") and "larger than 1 MiB" in result.cause.message


def test_a_wrong_secret_is_AccessDenied_without_echoing_it(store_spec, monkeypatch):
    _, spec_for = store_spec
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "AccessDenied")
    assert "not-the-secret" not in result.cause.message


def test_no_credentials_anywhere_is_NoCredentials(store_spec, monkeypatch, tmp_path):
    _, spec_for = store_spec
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "NoCredentials")
    assert "IAM role" in result.cause.message


class _ThrottlingStore(http.server.BaseHTTPRequestHandler):
    """FAKE: answers every request with S3's 503 SlowDown, which versitygw never sends on demand."""

    def do_GET(self):
        body = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_error_reply_outside_the_known_codes_is_StoreError(store_spec):
    _, spec_for = store_spec
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ThrottlingStore)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = _check(spec_for(f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
    assert (result.ok, result.cause.reason) == (False, "StoreError")
    assert "SlowDown" in result.cause.message


def _published(s3, prefix):
    from localdev.placeholder_artifacts import publish_placeholder_artifacts
    return publish_placeholder_artifacts(s3, f"s3://artifacts/{prefix}", "1.0.0")


def test_a_listed_object_missing_from_the_store_is_ArtifactMissing(store_spec, s3):
    prefix, spec_for = store_spec
    _published(s3, prefix)
    s3.delete_object(Bucket="artifacts", Key=prefix + "diffusion.pt")
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "ArtifactMissing")
    assert f"s3://artifacts/{prefix}diffusion.pt" in result.cause.message


def test_a_listed_object_of_another_size_or_digest_is_ArtifactMismatch(store_spec, s3):
    prefix, spec_for = store_spec
    manifest = _published(s3, prefix)
    s3.put_object(Bucket="artifacts", Key=prefix + "encoder.pt", Body=b"short")
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "ArtifactMismatch")
    assert "encoder.pt" in result.cause.message and f"manifest says {manifest['stages']['encoder']['size']}" in result.cause.message
    s3.put_object(Bucket="artifacts", Key=prefix + "encoder.pt", Body=b"x" * manifest["stages"]["encoder"]["size"],
                  Metadata={"sha256": "f" * 64})
    result = _check(spec_for())
    assert (result.ok, result.cause.reason) == (False, "ArtifactMismatch") and "sha256 metadata ffff" in result.cause.message


def test_listed_objects_are_checked_once_per_manifest_digest(store_spec, s3):
    """HEAD requests cost one per stage: a resync re-reading an unchanged manifest sends none."""
    prefix, spec_for = store_spec
    _published(s3, prefix)
    reader = ManifestReader(cache_seconds=0)
    assert reader.check(spec_for()).ok
    s3.delete_object(Bucket="artifacts", Key=prefix + "diffusion.pt")
    assert reader.check(spec_for()).ok, "the unchanged manifest's objects were checked again"
    _published(s3, prefix)  # new random stage bytes: a new manifest digest
    s3.delete_object(Bucket="artifacts", Key=prefix + "decoder.pt")
    assert reader.check(spec_for()).cause.reason == "ArtifactMissing"


def test_a_store_that_trickles_bytes_is_given_up_on_at_the_deadline(store_spec):
    """Every per-read timeout passes (a byte comes every 0.2 s): only the total deadline ends the read."""
    _, spec_for = store_spec
    server = serving(TricklingStore)
    started = time.monotonic()
    try:
        result = ManifestReader(cache_seconds=0, deadline_seconds=2).check(spec_for(f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
    took = time.monotonic() - started
    print(f"\ntrickling store given up after {took:.1f}s (deadline 2 s)")
    assert (result.ok, result.cause.reason) == (False, "StoreUnreachable") and "did not finish within 2s" in result.cause.message
    assert took < 4


def test_a_store_that_streams_for_ever_is_cut_at_the_size_cap(store_spec):
    _, spec_for = store_spec
    server = serving(EndlessStore)
    started = time.monotonic()
    try:
        result = _check(spec_for(f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
    assert (result.ok, result.cause.reason) == (False, "ManifestInvalid") and "larger than 1 MiB" in result.cause.message
    assert time.monotonic() - started < 5
