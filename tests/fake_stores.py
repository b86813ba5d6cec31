"""Stores that misbehave on purpose, on loopback: FAKES for what versitygw cannot be made to do; and one in memory."""

import http.server
import json
import socket
import threading
import time

from bernini.artifacts.guarded_store import Head, StoreFailure
from bernini.artifacts.manifest import MANIFEST_FILE, Manifest
from bernini.artifacts.store import S3Location


class TricklingStore(http.server.BaseHTTPRequestHandler):
    """FAKE: a store that answers 200 and then sends one byte every 0.2 s."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


class EndlessStore(TricklingStore):
    """FAKE: a store that streams bytes as fast as it can for ever, with no length."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b" " * 65536)
        except OSError:
            pass


def serving(handler) -> http.server.ThreadingHTTPServer:
    """handler served on a loopback port in the background; call shutdown() when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class EndlessErrorStore(TricklingStore):
    """FAKE: a store that answers 503 and then streams an error body for ever (botocore reads error bodies whole)."""

    def do_GET(self):
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"<Error>" * 8192)
        except OSError:
            pass

    do_HEAD = do_GET


class HeaderTricklingStore(TricklingStore):
    """FAKE: a status line, then one byte of a header every 0.2 s: every socket read succeeds in time."""

    def do_GET(self):
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    do_HEAD = do_GET


class ManifestThen(http.server.BaseHTTPRequestHandler):
    """FAKE: serves `manifest` (bytes, set on a subclass) for manifest.json and answers each HEAD with head()."""

    manifest = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.manifest)))
        self.end_headers()
        self.wfile.write(self.manifest)

    def log_message(self, *args):
        pass


def trickling_tls_handshake() -> tuple[socket.socket, threading.Event]:
    """FAKE: a TCP listener that answers a TLS ClientHello with the header of a 16 KiB handshake record, then one
    byte of it every 0.2 s. Returns the listener and an event that stops it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(connection):
        try:
            connection.sendall(b"\x16\x03\x03\x40\x00")
            while not stop.wait(0.2):
                connection.sendall(b"\x00")
        except OSError:
            pass

    def accept():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return listener, stop


class InMemoryStore:
    """FAKE GuardedStore (bernini.artifacts.guarded_store) holding objects in a dict, for tests of what the
    preflight's answers lead to rather than how a store is read. Patch it in where the preflight builds its store:
    monkeypatch.setattr(bernini.artifacts.preflight, "GuardedStore", store). While `failing` is set, every read
    raises it (an outage, a denial); `reads` counts the reads attempted."""

    def __init__(self):
        self.objects: dict[tuple[str, str], bytes | Head] = {}  # (bucket, key) -> manifest bytes or a listed file's HEAD
        self.failing: StoreFailure | None = None
        self.reads = 0

    def __call__(self, region, endpoint_url, credentials) -> "InMemoryStore":
        return self  # GuardedStore's constructor

    def publish(self, manifest: Manifest, uri: str) -> None:
        """manifest.json under the s3:// folder uri, and a HEAD answer of the right size for each listed file."""
        location = S3Location.parse(uri)
        document = manifest.model_dump(mode="json", by_alias=True)
        self.objects[(location.bucket, location.key(MANIFEST_FILE))] = json.dumps(document).encode()
        for artifact in manifest.stages.values():
            self.objects[(location.bucket, location.key(artifact.file))] = Head(artifact.size)

    def get(self, bucket: str, key: str, limit: int, deadline: float) -> bytes:
        return self._read(bucket, key)

    def head(self, bucket: str, key: str, deadline: float) -> Head:
        return self._read(bucket, key)

    def _read(self, bucket: str, key: str):
        self.reads += 1
        if self.failing:
            raise self.failing
        if (bucket, key) not in self.objects:
            raise StoreFailure("missing", "NoSuchKey", "HTTP 404 NoSuchKey")
        return self.objects[(bucket, key)]
