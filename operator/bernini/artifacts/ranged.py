"""Ranged GETs straight into caller-owned buffers over keep-alive connections, one per thread.

Each object is signed once (sigv4.py; a presigned URL carries IRSA and Pod Identity session tokens too); each
part is then a bare HTTP request whose body is read by the socket directly into the part's buffer. boto3's own
read path copies every byte twice, which halved pull throughput on 2 cores.
"""

import contextlib
import functools
import http.client
import os
import socket
import ssl
import threading
import time
import urllib.parse

from bernini.artifacts.store import error_code


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Made on first https use (loading the CA bundle costs start-up): AWS_CA_BUNDLE as botocore reads it, else
    certifi's bundle where installed (botocore's choice too), else the system's."""
    cafile = os.environ.get("AWS_CA_BUNDLE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return ssl.create_default_context(cafile=cafile)


class RangeError(Exception):
    """status 0 is a transport failure. The message never carries the store's answer (S3 echoes a refused
    token in it): only its error code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _refusal(response) -> RangeError:
    body = response.read(4096).decode(errors="replace")
    return RangeError(response.status, error_code(body) or f"HTTP {response.status}")


class RangeIgnored(RangeError):
    """The store answered a ranged GET with the whole object (200): reading on would hold all of it."""

    def __init__(self):
        super().__init__(200, "the store ignores Range requests and sends whole objects")


class DeadlinePassed(RangeError):
    def __init__(self):
        super().__init__(0, "the pull's deadline passed")


class RangedReader:
    def __init__(self, timeout: float = 30.0):
        self._local = threading.local()
        self._timeout = timeout
        self._watchdog = _Watchdog()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get((scheme, netloc))
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=tls_context())
            else:
                connection = http.client.HTTPConnection(netloc, timeout=self._timeout)
            connections[(scheme, netloc)] = connection
        return connection

    def _drop(self, scheme: str, netloc: str) -> None:
        connection = self._local.__dict__.get("connections", {}).pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    @contextlib.contextmanager
    def _get(self, url: str, headers: dict[str, str], deadline: float):
        """One GET on this thread's connection, yielding the response. The watchdog holds the deadline; transport
        errors become RangeError (DeadlinePassed once the deadline passed); a failed exchange drops the
        connection."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        connection = self._connection(parts.scheme, parts.netloc)
        sock = None
        try:
            connection.request("GET", target, headers=headers)
            if time.monotonic() >= deadline:
                raise DeadlinePassed()
            sock = connection.sock
            self._watchdog.guard(sock, deadline)
            yield connection.getresponse()
            if time.monotonic() >= deadline:
                raise DeadlinePassed()
        except (OSError, http.client.HTTPException) as error:
            self._drop(parts.scheme, parts.netloc)
            if time.monotonic() >= deadline:
                raise DeadlinePassed() from None
            raise RangeError(0, f"{type(error).__name__}: {error}") from None
        except RangeError as error:
            self._drop(parts.scheme, parts.netloc)
            if time.monotonic() >= deadline and not isinstance(error, DeadlinePassed):
                raise DeadlinePassed() from None  # the watchdog cut the read short
            raise
        finally:
            if sock is not None:
                self._watchdog.release(sock)

    def read_range(self, url: str, start: int, view: memoryview, deadline: float = float("inf")) -> None:
        """Fill view with bytes [start, start + len(view)) of the object behind the presigned url, by the
        monotonic deadline: a store trickling bytes passes every per-read timeout, so a timer shuts the
        socket down when the deadline comes (a request sent after it is refused here)."""
        with self._get(url, {"Range": f"bytes={start}-{start + len(view) - 1}"}, deadline) as response:
            if response.status == 200 and (start or (response.length or 0) > len(view)):
                raise RangeIgnored()
            if response.status not in (200, 206):
                raise _refusal(response)
            received = 0
            while received < len(view):
                count = response.readinto(view[received:])
                if not count:
                    break
                received += count
            if received != len(view):
                raise RangeError(0, f"short read: {received} of {len(view)} bytes")
            if response.read(1):  # more than asked for: never drained (it may not end), the connection is dropped
                raise RangeError(0, "the store sent more bytes than the range asked for")

    def stream(self, url: str, buffer: bytearray, sink, deadline: float = float("inf")) -> int:
        """GET the whole object, handing each chunk read into buffer to sink(view); returns the byte count.
        For stores that ignore Range: one pass, memory bounded by the buffer."""
        total = 0
        with self._get(url, {}, deadline) as response:
            if response.status != 200:
                raise _refusal(response)
            view = memoryview(buffer)
            while count := response.readinto(view):
                sink(view[:count])
                total += count
        return total

    def supports_ranges(self, url: str) -> bool:
        """Probe: does the store answer a one-byte Range request with 206?"""
        view = memoryview(bytearray(1))
        try:
            self.read_range(url, 0, view)
        except RangeIgnored:
            return False
        except RangeError:
            return True  # other failures show up, with their own handling, on the real reads
        return True


class _Watchdog:
    """Shuts down the sockets still reading when their deadline comes: one timer thread per deadline, not one per
    request (a pull makes hundreds). The socket, not the connection: http.client hands it to the response (and
    forgets it) when the server will close the connection."""

    def __init__(self):
        self._lock = threading.Lock()
        self._reading: dict[socket.socket, float] = {}
        self._timers: set[float] = set()

    def guard(self, sock: socket.socket, deadline: float) -> None:
        if deadline == float("inf"):
            return
        with self._lock:
            self._reading[sock] = deadline
            if deadline in self._timers:
                return
            self._timers.add(deadline)
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire, (deadline,))
        timer.daemon = True
        timer.start()

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._reading.pop(sock, None)

    def _expire(self, deadline: float) -> None:
        with self._lock:
            self._timers.discard(deadline)
            due = [sock for sock, its_deadline in self._reading.items() if its_deadline <= deadline]
        for sock in due:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
