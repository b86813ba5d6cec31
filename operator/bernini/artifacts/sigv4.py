"""Presigned S3 GET URLs (AWS Signature Version 4, query string), without botocore.

The init container signs every object it downloads; importing botocore to do so cost more start-up than the
smaller artifacts take to download. Checked against botocore's own presigning in the tests, and by every real
store the tests pull from.
"""

import datetime
import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None
    expires_at: float | None = None  # epoch seconds; None for long-lived keys

    def __repr__(self) -> str:  # never the secret or the token, wherever an object is printed
        return f"Credentials(access_key={self.access_key!r}, expires_at={self.expires_at!r})"


def object_url(bucket: str, key: str, region: str, endpoint_url: str | None) -> str:
    """The unsigned URL of an object: path style on an explicit endpoint (S3-compatible stores on plain hosts and
    IPs), virtual-hosted on AWS, where a bucket name with dots keeps path style (TLS wildcards cover one label)."""
    quoted = urllib.parse.quote(key, safe="/~")
    if endpoint_url:  # its own path is encoded as the signature's canonical path will be, as botocore does
        base = urllib.parse.urlsplit(endpoint_url.rstrip("/"))
        path = urllib.parse.quote(urllib.parse.unquote(base.path), safe="/~")
        return f"{base.scheme}://{base.netloc}{path}/{bucket}/{quoted}"
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    if "." in bucket:
        return f"https://s3.{region}.{domain}/{bucket}/{quoted}"
    return f"https://{bucket}.s3.{region}.{domain}/{quoted}"


def presign_get(url: str, region: str, credentials: Credentials, expires_seconds: int,
                now: datetime.datetime | None = None) -> str:
    """url (from object_url) signed for a GET by anyone holding it, for expires_seconds."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.removesuffix({"https": ":443", "http": ":80"}.get(parts.scheme, ""))  # as http.client sends it
    query = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{credentials.access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": "host",
    }
    if credentials.token:
        query["X-Amz-Security-Token"] = credentials.token
    canonical_query = "&".join(f"{_quote(name)}={_quote(value)}" for name, value in sorted(query.items()))
    canonical_request = "\n".join(
        ("GET", parts.path or "/", canonical_query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"))
    to_sign = "\n".join((ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()))
    key = f"AWS4{credentials.secret_key}".encode()
    for step in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, step.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{host}{parts.path}?{canonical_query}&X-Amz-Signature={signature}"


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")
