"""S3 access with bounded timeouts. Credentials come from the default chain (IRSA, Pod Identity, env)."""

from dataclasses import dataclass
from typing import Literal

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

# The one reading of S3 error codes (S3 proper and compatible stores); HEAD errors carry only the status.
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"})
SHA256_METADATA = "sha256"  # user metadata every published stage object carries


def failure_kind(error: ClientError) -> tuple[Literal["missing", "denied", "failed"], str]:
    """What an S3 error means for us, and its code."""
    code = error.response.get("Error", {}).get("Code", "")
    if code in _MISSING:
        return "missing", code
    if code in _DENIED:
        return "denied", code
    return "failed", code


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
    # botocore alone: boto3 would add ~0.2 s of imports to every init container start.
    return botocore.session.get_session().create_client("s3", endpoint_url=endpoint_url, config=config)
