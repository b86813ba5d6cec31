"""The puller against stores and disks that misbehave: a store that ignores Range, one that trickles bytes,
credentials that expire mid-pull, a full volume, one that fills mid-pull. The stores are versitygw behind a
small proxy that misbehaves on purpose (a FAKE only in what it changes: versitygw does each of these never)."""

import hashlib
import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from bernini.artifacts.manifest_files import MANIFEST_FILE
from bernini.artifacts.pull import Puller
from bernini.artifacts.sigv4 import object_url, presign_get
from tests.artifacts.conftest import MiB

ECHOED_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE-session-token"


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards GETs to versitygw with the client's Host header (signatures cover it)."""

    upstream: tuple[str, int]
    strip_range = False
    trickle = False
    trickle_all = False  # every body, the manifest's too, a few bytes at a time
    endless = False  # ranged answers go on past their bytes for ever (no Content-Length: until the client leaves)
    expired = ""  # "first": each object's first ranged GET, "always": every GET, answered as S3 answers an expired
    #               session token: HTTP 400 ExpiredToken, echoing the token
    answered: set

    fills: Path | None = None  # another writer takes the volume's free space at the first ranged GET

    def do_GET(self):
        path = self.path.split("?")[0]
        if self.expired == "always" or (self.expired == "first" and "Range" in self.headers
                                         and path not in self.answered):
            self.answered.add(path)
            body = (b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message>"
                    b"<Token-0>" + ECHOED_TOKEN.encode() + b"</Token-0></Error>")
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.fills and "Range" in self.headers and not self.fills.exists():
            _fill(self.fills)
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        connection.putrequest("GET", self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() == "range" and self.strip_range:
                continue
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        self.send_response(response.status)
        endless = self.endless and response.status == 206
        dropped = ("transfer-encoding", "connection", "content-length") if endless else ("transfer-encoding", "connection")
        for name, value in response.getheaders():
            if name.lower() not in dropped:
                self.send_header(name, value)
        self.end_headers()
        try:
            if endless:
                self.wfile.write(body)
                while True:
                    self.wfile.write(bytes(64 << 10))
            elif self.trickle_all:
                for index in range(0, len(body), 16):
                    self.wfile.write(body[index:index + 16])
                    self.wfile.flush()
                    time.sleep(0.05)
            elif self.trickle and len(body) > 4096:
                for index in range(0, len(body), 512):
                    self.wfile.write(body[index:index + 512])
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def _fill(path: Path) -> None:
    with path.open("wb") as handle:
        try:
            while True:
                handle.write(bytes(MiB))
                handle.flush()
        except OSError:
            pass


@pytest.fixture
def proxy(local_s3):
    def start(**behaviour):
        upstream = urllib.parse.urlsplit(local_s3.endpoint_url)
        handler = type("Misbehaving", (_Proxy,), {"upstream": (upstream.hostname, upstream.port), "answered": set(),
                                                  **behaviour})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    servers = []
    yield start
    for server in servers:
        server.shutdown()


def _command(uri, dest, endpoint, *extra) -> list[str]:
    return [sys.executable, "-m", "bernini", "artifacts", "pull", uri, str(dest), "--endpoint-url", endpoint,
            "--part-size-mib", "1", "--termination-log", str(dest.parent / "termination"), *extra]


def _pull(uri, dest, endpoint, local_s3, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(_command(uri, dest, endpoint, *extra), env={**os.environ, **local_s3.credentials_env},
                          capture_output=True, text=True, timeout=120)


def _pull_measuring_peak_rss(uri, dest, endpoint, local_s3) -> tuple[subprocess.CompletedProcess, float]:
    """The pull, and its own peak RSS in MiB (VmHWM, read until it exits)."""
    process = subprocess.Popen(_command(uri, dest, endpoint), env={**os.environ, **local_s3.credentials_env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
            peak = max(peak, int(line.split()[1]) / 1024)
        except (OSError, StopIteration):
            pass
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), peak


def test_a_store_that_ignores_range_is_streamed_once_per_file_in_bounded_memory(published, proxy, local_s3, tmp_path):
    uri, manifest = published
    result, peak = _pull_measuring_peak_rss(uri, tmp_path / "pulled", proxy(strip_range=True), local_s3)
    assert result.returncode == 0, result.stderr
    assert "the store ignores Range requests: streaming each file once instead" in result.stdout
    for artifact in manifest.stages.values():
        assert hashlib.sha256((tmp_path / "pulled" / artifact.file).read_bytes()).hexdigest() == artifact.sha256
    print(f"\nrange-ignoring store: pulled with a peak RSS of {peak:.0f} MiB")
    assert peak < 250  # 20 one-MiB parts each draining the 20 MiB object would hold ~400 MiB


def test_an_expired_token_answer_signs_again_and_never_shows_the_token(published, proxy, local_s3, tmp_path):
    """S3 answers an expired session token with HTTP 400 ExpiredToken, not 403, and echoes the token."""
    uri, manifest = published
    once = _pull(uri, tmp_path / "once", proxy(expired="first"), local_s3)
    assert once.returncode == 0, once.stderr
    for artifact in manifest.stages.values():
        assert hashlib.sha256((tmp_path / "once" / artifact.file).read_bytes()).hexdigest() == artifact.sha256
    (tmp_path / "termination").write_text("")  # the kubelet creates it; the pull only writes into it
    always = _pull(uri, tmp_path / "always", proxy(expired="always"), local_s3)
    termination = (tmp_path / "termination").read_text()
    assert always.returncode == 3 and "ExpiredToken" in always.stderr, always.stderr
    assert ECHOED_TOKEN not in always.stderr + always.stdout + termination + once.stderr + once.stdout


def test_a_ranged_answer_that_never_ends_is_dropped_not_drained(published, proxy, local_s3, tmp_path):
    uri, _ = published
    started = time.monotonic()
    result = _pull(uri, tmp_path / "pulled", proxy(endless=True), local_s3, "--deadline-seconds", "120")
    took = time.monotonic() - started
    assert result.returncode == 1 and "the store sent more bytes than the range asked for" in result.stderr, result.stderr
    assert took < 60, f"the pull spent {took:.0f}s on answers that never end"


def test_a_trickling_store_ends_the_pull_at_its_deadline(published, proxy, local_s3, tmp_path):
    uri, _ = published
    started = time.monotonic()
    result = _pull(uri, tmp_path / "pulled", proxy(trickle=True), local_s3, "--deadline-seconds", "3")
    took = time.monotonic() - started
    print(f"\ntrickling store: exit {result.returncode} after {took:.1f}s (deadline 3 s)")
    assert result.returncode == 10 and "did not finish within 3s" in result.stderr, result.stderr
    assert took < 10
    assert not list((tmp_path / "pulled").glob("*.partial")), "a temp file was left behind"


def test_a_store_trickling_the_manifest_ends_the_pull_at_its_deadline(published, proxy, local_s3, tmp_path):
    """The manifest is small: 16 bytes every 50 ms keep every read of it within its timeout for minutes."""
    uri, _ = published
    started = time.monotonic()
    result = _pull(uri, tmp_path / "pulled", proxy(trickle_all=True), local_s3, "--deadline-seconds", "3")
    took = time.monotonic() - started
    assert result.returncode == 10 and "(at the manifest)" in result.stderr, result.stderr
    assert took < 10, f"the manifest read took {took:.1f}s"


class _ExpiringFirst(Puller):
    """The real puller, whose first URLs are signed already expired, as when the pod's credentials rotate
    after signing. Every request goes to versitygw, which refuses the expired ones."""

    def _presign(self, relative):
        signed = self.__dict__.setdefault("signed", set())
        if relative != MANIFEST_FILE and relative not in signed:
            signed.add(relative)
            url = object_url(self.location.bucket, self.location.key(relative), self.region, self.endpoint_url)
            url = presign_get(url, self.region, self.credentials.current(), 1)
            time.sleep(1.1)
            return url
        return super()._presign(relative)


def test_urls_refused_mid_pull_are_signed_again_once(published, local_s3, tmp_path, monkeypatch):
    uri, manifest = published
    for name, value in local_s3.credentials_env.items():
        monkeypatch.setenv(name, value)
    report = _ExpiringFirst(uri, tmp_path / "pulled", endpoint_url=local_s3.endpoint_url, part_size=MiB,
                            log=lambda _: None).pull()
    assert report.files == len(manifest.stages)
    for artifact in manifest.stages.values():
        assert hashlib.sha256((tmp_path / "pulled" / artifact.file).read_bytes()).hexdigest() == artifact.sha256


@pytest.fixture
def volume(tmp_path):
    """A real tmpfs of the given size."""
    mounts = []

    def mount(size: str) -> Path:
        path = tmp_path / f"volume-{size}"
        path.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, text=True)
        assert mounted.returncode == 0, f"this test needs root to mount a small tmpfs: {mounted.stderr}"
        mounts.append(path)
        return path
    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_volume_exits_9_naming_the_file_before_downloading_it(published, local_s3, volume, proxy):
    uri, _ = published
    small = volume("4m")  # the 20 MiB diffusion file cannot fit
    watching = proxy(fills=small / "ranged-get-seen")  # a ranged GET would leave this file behind
    result = _pull(uri, small / "pulled", watching, local_s3)
    assert result.returncode == 9 and "no space left for diffusion.pt" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (small / "ranged-get-seen").exists(), "a ranged GET was sent although the set could not fit"
    assert not list((small / "pulled").glob("*.partial"))


def test_a_volume_that_fills_during_the_pull_exits_9_and_leaves_no_temp_file(published, local_s3, volume, proxy):
    uri, _ = published
    roomy = volume("32m")  # room for the 23 MiB set, until another writer takes it
    result = _pull(uri, roomy / "pulled", proxy(fills=roomy / "other-writer"), local_s3)
    assert (roomy / "other-writer").exists()
    assert result.returncode == 9 and "no space left for" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not list((roomy / "pulled").glob("*.partial"))
