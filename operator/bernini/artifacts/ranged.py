"""Ranged GETs straight into caller-owned buffers over keep-alive connections, one per thread.

Signing goes through botocore once per object (a presigned URL carries IRSA/Pod Identity session tokens
too); each part is then a bare HTTP request whose body is read by the socket directly into the part's
buffer. boto3's own read path copies every byte twice, which halved pull throughput on 2 cores.
"""

import http.client
import ssl
import threading
import urllib.parse

from botocore.httpsession import get_cert_path


class RangeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RangedReader:
    def __init__(self, timeout: float = 30.0):
        self._local = threading.local()
        self._timeout = timeout
        self._tls = ssl.create_default_context(cafile=get_cert_path(True))

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get((scheme, netloc))
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._tls)
            else:
                connection = http.client.HTTPConnection(netloc, timeout=self._timeout)
            connections[(scheme, netloc)] = connection
        return connection

    def _drop(self, scheme: str, netloc: str) -> None:
        connection = self._local.__dict__.get("connections", {}).pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    def read_range(self, url: str, start: int, view: memoryview) -> None:
        """Fill view with bytes [start, start + len(view)) of the object behind the presigned url."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        connection = self._connection(parts.scheme, parts.netloc)
        try:
            connection.request("GET", target, headers={"Range": f"bytes={start}-{start + len(view) - 1}"})
            response = connection.getresponse()
            if response.status not in (200, 206):
                body = response.read(4096).decode(errors="replace")
                raise RangeError(response.status, body)
            received = 0
            while received < len(view):
                count = response.readinto(view[received:])
                if not count:
                    break
                received += count
            response.read()  # drain, so the connection can be reused
            if received != len(view):
                raise RangeError(0, f"short read: {received} of {len(view)} bytes")
        except (OSError, http.client.HTTPException) as error:
            self._drop(parts.scheme, parts.netloc)
            raise RangeError(0, f"{type(error).__name__}: {error}") from None
        except RangeError:
            self._drop(parts.scheme, parts.netloc)
            raise
