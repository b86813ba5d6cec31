"""The artifact puller and verifier against a real S3-compatible server (versitygw) over HTTP on loopback.

versitygw: Apache-2.0, built from the Go module proxy, serves a plain directory through the real S3 API
(SigV4, ranged GETs, multipart uploads), so every request here is the one an init container makes on EKS.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bernini.artifacts.manifest import MANIFEST_FILE, Manifest
from bernini.artifacts.publish import publish
from bernini.artifacts.pull import ChecksumMismatch, ManifestChanged, ManifestMissing, PullError, Puller
from bernini.artifacts.verify import verify
from bernini.report import pull_summary
from localdev.waiting import wait_for

from tests.artifacts.conftest import MiB, SIZES, write_set


def _puller(local_s3, uri, dest, monkeypatch, **kwargs):
    for name, value in local_s3.credentials_env.items():
        monkeypatch.setenv(name, value)
    return Puller(uri, dest, endpoint_url=local_s3.endpoint_url, part_size=1 * MiB, log=lambda _: None, **kwargs)


def test_round_trip_publish_verify_pull(published, local_s3, tmp_path, monkeypatch):
    uri, manifest = published
    puller = _puller(local_s3, uri, tmp_path / "pulled", monkeypatch)
    checked, problems = verify(puller)
    assert (checked, problems) == (3, [])
    report = puller.pull()
    assert (report.files, report.skipped, report.bytes) == (3, 0, sum(SIZES.values()))
    for artifact in manifest.stages.values():
        pulled = (tmp_path / "pulled" / artifact.file).read_bytes()
        assert pulled == (tmp_path / "compiled" / artifact.file).read_bytes()
    assert Manifest.model_validate_json((tmp_path / "pulled" / MANIFEST_FILE).read_text()) == manifest
    assert not list((tmp_path / "pulled").glob("*.partial"))


def test_corrupted_object_fails_the_checksum_and_leaves_no_file(published, s3, local_s3, tmp_path, monkeypatch):
    uri, manifest = published
    key = uri.removeprefix("s3://artifacts/") + "diffusion.pt"
    s3.put_object(Bucket="artifacts", Key=key, Body=os.urandom(SIZES["diffusion"]),
                  Metadata={"sha256": manifest.stages["diffusion"].sha256})
    puller = _puller(local_s3, uri, tmp_path / "pulled", monkeypatch)
    with pytest.raises(ChecksumMismatch, match="checksum mismatch for diffusion.pt"):
        puller.pull()
    assert not (tmp_path / "pulled" / "diffusion.pt").exists()
    assert not (tmp_path / "pulled" / MANIFEST_FILE).exists()


def test_verify_reports_a_truncated_object_without_downloading(published, s3, local_s3, tmp_path, monkeypatch):
    uri, _ = published
    s3.put_object(Bucket="artifacts", Key=uri.removeprefix("s3://artifacts/") + "encoder.pt", Body=b"short")
    checked, problems = verify(_puller(local_s3, uri, tmp_path, monkeypatch))
    assert checked == 3
    assert [p.file for p in problems] == ["encoder.pt", "encoder.pt"]  # wrong size, no sha256 metadata


def test_missing_manifest_names_the_uri(local_s3, tmp_path, monkeypatch, s3):
    if "artifacts" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="artifacts")
    with pytest.raises(ManifestMissing, match="s3://artifacts/nothing-here/manifest.json does not exist"):
        _puller(local_s3, "s3://artifacts/nothing-here/", tmp_path, monkeypatch).pull()


def test_pinned_manifest_digest_refuses_a_changed_set(published, local_s3, tmp_path, monkeypatch):
    uri, _ = published
    with pytest.raises(ManifestChanged, match="changed after preflight"):
        _puller(local_s3, uri, tmp_path, monkeypatch).pull(expected_manifest_sha256="0" * 64)


def test_path_traversal_keys_are_refused_before_any_download(s3, local_s3, tmp_path, monkeypatch, published):
    uri, manifest = published
    document = json.loads(manifest.model_dump_json())
    document["stages"]["encoder"]["file"] = "../../outside.pt"
    s3.put_object(Bucket="artifacts", Key=uri.removeprefix("s3://artifacts/") + MANIFEST_FILE, Body=json.dumps(document))
    with pytest.raises(PullError, match="must be a plain relative path"):
        _puller(local_s3, uri, tmp_path / "pulled", monkeypatch).pull()
    assert not (tmp_path / "outside.pt").exists()


def test_interrupted_pull_resumes_and_skips_verified_files(published, local_s3, tmp_path, monkeypatch):
    uri, manifest = published
    dest = tmp_path / "pulled"
    env = {**os.environ, **local_s3.credentials_env}
    command = [sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(dest),
               "--endpoint-url", local_s3.endpoint_url, "--part-size-mib", "1", "--concurrency", "1"]
    interrupted = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for((dest / "encoder.pt").exists, "the first file to land", timeout=30, interval=0.01)
    interrupted.kill()  # mid-way through the 20 MiB diffusion file
    interrupted.wait()
    assert (dest / "encoder.pt").exists() and not (dest / MANIFEST_FILE).exists()
    (dest / "decoder.pt").unlink(missing_ok=True)

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert "present and verified: encoder.pt" in resumed.stdout
    assert "checksums verified; 1 already present and verified" in resumed.stdout
    for artifact in manifest.stages.values():
        assert hashlib.sha256((dest / artifact.file).read_bytes()).hexdigest() == artifact.sha256


def test_exit_codes_and_messages_of_the_init_container(published, local_s3, tmp_path):
    uri, _ = published
    base = [sys.executable, "-m", "bernini", "artifacts", "pull"]
    env = {**os.environ, **local_s3.credentials_env}
    denied = subprocess.run(base + [uri, str(tmp_path / "a"), "--endpoint-url", local_s3.endpoint_url],
                            env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"}, capture_output=True, text=True, timeout=60)
    assert denied.returncode == 3 and "denied" in denied.stderr
    assert local_s3.secret_key not in denied.stderr + denied.stdout

    termination_log = tmp_path / "termination-log"
    termination_log.touch()  # as the kubelet provides it
    missing = subprocess.run(base + ["s3://artifacts/absent/", str(tmp_path / "b"), "--endpoint-url", local_s3.endpoint_url,
                                     "--termination-log", str(termination_log)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    # The pod status carries exactly the error, whatever the log printed after it.
    assert termination_log.read_text() == missing.stderr.strip().splitlines()[-1]
    assert not Path("/dev/termination-log").exists(), "outside a pod the default path must not be created"

    # A success leaves where its bytes came from, for `bernini status` to read out of the pod status.
    pulled = subprocess.run(base + [uri, str(tmp_path / "c"), "--endpoint-url", local_s3.endpoint_url,
                                    "--termination-log", str(termination_log)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert pulled.returncode == 0, pulled.stderr
    summary = pull_summary(termination_log.read_text())
    assert summary and (summary["storeFiles"], summary["storeBytes"]) == (3, sum(SIZES.values())), summary
    assert (summary["cacheFiles"], summary["cacheBytes"], summary["presentFiles"]) == (0, 0, 0), summary
    # Its last line says when its first request went out and where its credentials came from.
    started = re.search(r"first request (\d+\.\d+)s after the process started \(credentials: environment\)$",
                        pulled.stdout.strip())
    assert started and 0 < float(started.group(1)) < 10, pulled.stdout


def _pull_exit(uri, dest, local_s3) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(dest),
                           "--endpoint-url", local_s3.endpoint_url, "--part-size-mib", "1"],
                          env={**os.environ, **local_s3.credentials_env}, capture_output=True, text=True, timeout=120)


def test_each_failure_class_exits_with_its_documented_code(published, s3, local_s3, tmp_path):
    """7 a key escaping dest, 4 an object shorter than the manifest says, 8 a listed object that is missing
    (2 stays for the manifest itself): once 1, 1 and 2."""
    uri, manifest = published
    prefix = uri.removeprefix("s3://artifacts/")
    document = json.loads(manifest.model_dump_json())

    document["stages"]["encoder"]["file"] = "../../outside.pt"
    s3.put_object(Bucket="artifacts", Key=prefix + MANIFEST_FILE, Body=json.dumps(document))
    escaping = _pull_exit(uri, tmp_path / "a", local_s3)
    assert escaping.returncode == 7 and "must be a plain relative path" in escaping.stderr, escaping.stderr
    assert not (tmp_path / "outside.pt").exists()

    s3.put_object(Bucket="artifacts", Key=prefix + MANIFEST_FILE, Body=manifest.model_dump_json(by_alias=True))
    encoder = manifest.stages["encoder"]
    s3.put_object(Bucket="artifacts", Key=prefix + encoder.file, Body=os.urandom(encoder.size // 2))
    short = _pull_exit(uri, tmp_path / "b", local_s3)
    assert short.returncode == 4 and f"{encoder.file} is shorter than the manifest's" in short.stderr, short.stderr

    s3.delete_object(Bucket="artifacts", Key=prefix + encoder.file)
    missing = _pull_exit(uri, tmp_path / "c", local_s3)
    assert missing.returncode == 8 and "does not exist, but the manifest lists it" in missing.stderr, missing.stderr


def test_unreachable_store_fails_clearly_in_bounded_time(tmp_path, monkeypatch):
    from localdev.processes import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    started = time.monotonic()
    with pytest.raises(PullError, match="cannot reach the artifact store"):
        Puller("s3://artifacts/x/", tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}", log=lambda _: None).pull()
    assert time.monotonic() - started < 30


def test_unsupported_manifest_version_exits_with_its_own_code(published, s3, local_s3, tmp_path):
    uri, manifest = published
    document = json.loads(manifest.model_dump_json())
    document["manifestVersion"] = 2
    s3.put_object(Bucket="artifacts", Key=uri.removeprefix("s3://artifacts/") + MANIFEST_FILE, Body=json.dumps(document))
    result = subprocess.run(
        [sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(tmp_path), "--endpoint-url", local_s3.endpoint_url],
        env={**os.environ, **local_s3.credentials_env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 5 and "manifestVersion 2 is not supported" in result.stderr


def test_preflight_rides_out_a_store_outage_but_reports_one_it_never_saw_succeed(tmp_path, monkeypatch):
    """A second, private versitygw that the test stops: the operator's reader keeps the last verified
    manifest through a blip, and says StoreUnreachable when it has nothing verified to keep."""
    import boto3

    from bernini.artifacts.preflight import ManifestReader
    from localdev.s3server import LocalS3
    from tests.unit.specs import make_spec

    server = LocalS3(tmp_path / "s3", tmp_path / "s3.log", tied_to_parent=True)
    server.start()
    for name, value in server.credentials_env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
    client.create_bucket(Bucket="artifacts")
    manifest = write_set(tmp_path / "compiled", {"encoder": 10, "diffusion": 10, "decoder": 10})
    publish(client, "s3://artifacts/blip/", tmp_path / "compiled", manifest)
    spec = make_spec(model={"artifactsUri": "s3://artifacts/blip/"}, s3={"region": "us-east-1", "endpointUrl": server.endpoint_url})
    reader = ManifestReader(cache_seconds=0)
    assert reader.check(spec).ok
    server.stop()
    started = time.monotonic()
    kept = reader.check(spec)
    assert kept.ok and kept.cause.reason == "Verified"
    assert time.monotonic() - started < 30
    fresh = ManifestReader(cache_seconds=0).check(spec)
    assert (fresh.ok, fresh.cause.reason) == (False, "StoreUnreachable")


def test_a_pull_in_a_terminal_shows_a_progress_bar_and_a_log_does_not(published, local_s3, tmp_path):
    import pty

    uri, _ = published
    command = [sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(tmp_path / "tty"), "--endpoint-url",
               local_s3.endpoint_url, "--part-size-mib", "1", "--concurrency", "1"]
    env = {**os.environ, **local_s3.credentials_env}
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, env=env, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the pull exited and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(60) == 0, seen.decode(errors="replace")
    shown = seen.decode(errors="replace")
    assert "MiB/s" in shown and "] " in shown and "%" in shown and "\r[" in shown, shown
    assert "pulled 3 files" in shown

    piped = subprocess.run([*command[:6], str(tmp_path / "log"), *command[7:]], env=env, capture_output=True,
                           text=True, timeout=60)
    assert piped.returncode == 0 and "\r[" not in piped.stdout, piped.stdout
