"""Upload a compiled artifact set: stage files first (multipart, parallel), manifest.json last.

A reader that finds manifest.json therefore finds every file it names. Each object carries its SHA-256
in metadata so `bernini artifacts verify` can check a remote set without downloading it.
"""

from pathlib import Path

from boto3.s3.transfer import S3Transfer, TransferConfig

from bernini.artifacts.manifest import MANIFEST_FILE, Manifest
from bernini.artifacts.store import SHA256_METADATA, S3Location

MiB = 1 << 20


def publish(s3, uri: str, directory: Path, manifest: Manifest, concurrency: int = 16) -> None:
    location = S3Location.parse(uri)
    transfer = S3Transfer(s3, TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB,
                                             max_concurrency=concurrency))
    for artifact in manifest.stages.values():
        transfer.upload_file(
            str(directory / artifact.file), location.bucket, location.key(artifact.file),
            extra_args={"Metadata": {SHA256_METADATA: artifact.sha256}},
        )
    s3.put_object(
        Bucket=location.bucket, Key=location.key(MANIFEST_FILE),
        Body=manifest.model_dump_json(indent=2, exclude_none=True).encode(), ContentType="application/json",
    )
