"""S3 access with bounded timeouts, and the one reading of S3's error codes. Credentials come from the default
chain (IRSA, Pod Identity, env). botocore is imported when a client is made: the init container never makes one."""

import re
from dataclasses import dataclass
from typing import Literal

# The one reading of S3 error codes (S3 proper and compatible stores); HEAD errors carry only the status.
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                     "Forbidden", "403"})
SHA256_METADATA = "sha256"  # user metadata every published stage object carries


Kind = Literal["missing", "denied", "failed"]


def kind_of_code(code: str) -> Kind:
    """What an S3 error code means for us."""
    if code in _MISSING:
        return "missing"
    if code in _DENIED:
        return "denied"
    return "failed"


def error_code(body: str) -> str | None:
    """The <Code> of an S3 error document."""
    found = re.search(r"<Code>([A-Za-z0-9.]{1,64})</Code>", body)
    return found and found.group(1)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, uri: str) -> "S3Location":
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(bucket, prefix)

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def uri(self, relative: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"


def s3_client(region: str, endpoint_url: str | None = None, connect_timeout: float = 3, read_timeout: float = 10,
              attempts: int = 3, max_pool_connections: int = 10):
    import botocore.session
    from botocore.config import Config

    config = Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
        max_pool_connections=max_pool_connections,
        signature_version="s3v4",  # presigned URLs too; S3 and most compatible stores refuse SigV2
        # S3-compatible stores on plain hostnames or IPs need path-style addressing.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    return botocore.session.get_session().create_client("s3", endpoint_url=endpoint_url, config=config)
