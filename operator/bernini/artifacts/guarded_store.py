"""The operator's S3 reads of a tenant's store: GET and HEAD with one deadline and one byte cap per exchange.

botocore cannot promise either: it reads any error body whole (a 503 with an endless body grows without
bound), starts its read timeout only after the headers (a store that trickles headers holds a worker for
ever), and HEADs have no total deadline at all. Here every byte of an answer, status line and headers
included, counts against the cap, a watchdog closes the socket at the deadline whatever phase the exchange is
in, and the address is checked when dialling (bernini.endpoints). Requests are signed by botocore (SigV4)
with the default credential chain, so IRSA and Pod Identity work as they do for every AWS client.
"""

import functools
import http.client
import io
import os
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path

from bernini.artifacts.store import kind_of_code
from bernini.endpoints import Endpoint, EndpointRefused, parse_endpoint, resolve

HEADER_BYTES = 64 << 10  # status line and headers of one answer; S3's are under 2 KiB
ERROR_BODY_BYTES = 16 << 10  # an S3 error document is a few hundred bytes
READ_TIMEOUT = 5.0  # any one socket operation; the exchange's deadline bounds their sum
_ERROR_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_DECIMAL = re.compile(r"[0-9]{1,18}")  # str.isdigit() takes "²", which int() refuses
Kind = Literal["missing", "denied", "failed", "unreachable", "nocredentials", "refused"]


@dataclass
class StoreFailure(Exception):
    kind: Kind
    code: str
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or self.code


@dataclass(frozen=True)
class Head:
    content_length: int | None
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix


class TooLarge(Exception):
    pass


class Credentials:
    """Frozen credentials from the default chain (env, web identity for IRSA, the container provider for Pod
    Identity, ...), resolved once per instance and refreshed by botocore as they near expiry."""

    def __init__(self):
        self._session = botocore.session.get_session()
        self._lock = threading.Lock()

    def frozen(self):
        with self._lock:
            credentials = self._session.get_credentials()
        if credentials is None:
            raise StoreFailure("nocredentials", "NoCredentials")
        return credentials.get_frozen_credentials()


class GuardedStore:
    def __init__(self, region: str, endpoint_url: str | None, credentials: Credentials):
        self.region, self.credentials = region, credentials
        self.endpoint: Endpoint | None = parse_endpoint(endpoint_url) if endpoint_url else None

    def get(self, bucket: str, key: str, limit: int, deadline: float) -> bytes:
        """The object's bytes, at most limit of them (TooLarge beyond)."""
        return self._exchange("GET", bucket, key, deadline, limit)[1]

    def head(self, bucket: str, key: str, deadline: float) -> Head:
        headers = self._exchange("HEAD", bucket, key, deadline, 0)[0]
        length = headers.get("content-length", "")
        return Head(int(length) if _DECIMAL.fullmatch(length) else None,
                    {name[len("x-amz-meta-"):]: value for name, value in headers.items()
                     if name.startswith("x-amz-meta-")})

    def _url(self, bucket: str, key: str) -> tuple[Endpoint, str]:
        path = f"/{bucket}/{quote(key, safe='/~')}"
        if self.endpoint:  # S3-compatible stores on plain names or addresses: path-style
            return self.endpoint, f"{self.endpoint.scheme}://{self.endpoint.netloc}{self.endpoint.path}{path}"
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        endpoint = parse_endpoint(f"https://s3.{self.region}.{suffix}")
        return endpoint, f"https://{endpoint.netloc}{path}"

    def _exchange(self, method: str, bucket: str, key: str, deadline: float, limit: int):
        endpoint, url = self._url(bucket, key)
        request = AWSRequest(method=method, url=url)
        S3SigV4Auth(self.credentials.frozen(), "s3", self.region).add_auth(request)
        try:
            connection = _connect(endpoint, deadline)
        except StoreFailure:
            raise
        except OSError as error:
            raise _unreachable(error, deadline) from None
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), connection.expire)
        watchdog.start()
        try:
            answer = connection.send(method, url[len(f"{endpoint.scheme}://{endpoint.netloc}"):], request, endpoint,
                                     limit)
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise _unreachable(error, deadline, connection.expired) from None
        finally:
            watchdog.cancel()
            connection.abort()
        if connection.expired:  # http.client takes a connection closed mid-headers for their end
            raise StoreFailure("unreachable", "Timeout", "no complete answer before the deadline")
        return answer


def _unreachable(error: Exception, deadline: float, expired: bool = False) -> StoreFailure:
    if expired or time.monotonic() >= deadline:
        return StoreFailure("unreachable", "Timeout", "no complete answer before the deadline")
    return StoreFailure("unreachable", type(error).__name__, f"{type(error).__name__}: {error}"[:300])


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle costs tens of milliseconds of CPU, and a preflight makes one exchange
    per listed object."""
    return ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True))


class _Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.abort()

    def abort(self) -> None:
        """Ends every pending read and write on the socket at once (the watchdog's and the cleanup's call)."""
        _shut(self.sock)
        self.sock.close()

    def send(self, method: str, target: str, request: AWSRequest, endpoint: Endpoint, limit: int):
        http_connection = http.client.HTTPConnection(endpoint.host, endpoint.port)
        http_connection.sock = _CappedSocket(self.sock, HEADER_BYTES + max(limit, ERROR_BODY_BYTES))
        http_connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        http_connection.putheader("Host", endpoint.netloc)
        for name, value in request.headers.items():
            http_connection.putheader(name, value)
        http_connection.endheaders()
        response = http_connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        if response.status in (301, 400) and headers.get("x-amz-bucket-region"):
            # S3 names the bucket's region when asked in another; botocore used to follow it silently.
            region = re.sub(r"[^a-z0-9-]", "", headers["x-amz-bucket-region"])[:32]
            raise StoreFailure("failed", "WrongRegion", f"the bucket is in {region}: set spec.s3.region to {region}")
        if response.status >= 300:
            raise _failure(response.status, b"" if method == "HEAD" else response.read(ERROR_BODY_BYTES))
        if method == "HEAD":
            return headers, b""
        declared = headers.get("content-length", "")
        if _DECIMAL.fullmatch(declared) and int(declared) > limit:
            raise TooLarge()
        body = response.read(limit + 1)
        if len(body) > limit:
            raise TooLarge()
        return headers, body


def _failure(status: int, body: bytes) -> StoreFailure:
    found = _ERROR_CODE.search(body)
    code = found.group(1).decode() if found else {404: "NotFound", 403: "Forbidden"}.get(status, str(status))
    return StoreFailure(kind_of_code(code), code, f"HTTP {status} {code}")


def _connect(endpoint: Endpoint, deadline: float) -> _Connection:
    """A socket to an allowed address of the endpoint (TLS for https), within the deadline."""
    last_error: OSError = ConnectionError(f"no address for {endpoint.host}")
    for family, sockaddr in _resolve_before(endpoint, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(min(READ_TIMEOUT, remaining))
        # A handshake trickled a byte at a time passes every per-read timeout: the deadline closes it too.
        watchdog = threading.Timer(remaining, _shut, args=(sock,))
        watchdog.start()
        try:
            sock.connect(sockaddr)
            if endpoint.scheme == "https":
                sock = _tls_context().wrap_socket(sock, server_hostname=endpoint.host)
            connection = _Connection(sock)
        except OSError as error:
            sock.close()
            last_error = error
            continue
        finally:
            watchdog.cancel()
        if time.monotonic() >= deadline:
            connection.abort()
            break
        return connection
    raise last_error


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# More threads than store reads can be in progress at once: a lookup that outlived its deadline (the system
# resolver has none) still holds one.
_RESOLVER = ThreadPoolExecutor(8, thread_name_prefix="resolve")


def _resolve_before(endpoint: Endpoint, deadline: float) -> list[tuple]:
    """resolve() within what is left of the deadline (the system resolver has no deadline of its own); a name
    whose answers include a refused address fails the exchange like any refusal."""
    lookup = _RESOLVER.submit(resolve, endpoint)
    try:
        return lookup.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        lookup.cancel()  # still queued: never run it
        raise StoreFailure("unreachable", "Timeout", "no complete answer before the deadline") from None
    except EndpointRefused as error:
        raise StoreFailure("refused", "EndpointRefused", str(error)) from None


class _CappedSocket:
    """What http.client needs of a socket, with every received byte counted against a cap."""

    def __init__(self, sock: socket.socket, cap: int):
        self._sock, self._cap = sock, cap

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def makefile(self, mode: str):
        return io.BufferedReader(_CappedReader(self._sock, self._cap), buffer_size=16 << 10)

    def close(self) -> None:
        pass  # the _Connection owns the socket


class _CappedReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, cap: int):
        self._sock, self._left = sock, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            raise TooLarge()
        view = memoryview(buffer)[:self._left]
        received = self._sock.recv_into(view)
        self._left -= received
        return received
