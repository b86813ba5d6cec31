"""`bernini artifacts verify`: check a remote artifact set from S3 metadata alone (HEAD requests)."""

from dataclasses import dataclass

from botocore.exceptions import ClientError

from bernini.artifacts.guarded_store import Head
from bernini.artifacts.manifest import StageArtifact, parse_manifest
from bernini.artifacts.manifest_files import FileEntry
from bernini.artifacts.pull import Puller, PullError
from bernini.artifacts.store import SHA256_METADATA, s3_client


@dataclass(frozen=True)
class Finding:
    file: str
    problem: str


def verify(puller: Puller, expected_manifest_sha256: str | None = None) -> tuple[int, list[Finding]]:
    """Returns (stages checked, problems). Raises PullError for manifest-level failures; the whole manifest is
    validated here, not just what a pull reads of it."""
    _, raw = puller.read_manifest(expected_manifest_sha256)
    try:
        manifest = parse_manifest(raw)
    except ValueError as error:
        raise PullError(str(error)) from None
    s3 = s3_client(puller.region, puller.endpoint_url, connect_timeout=5, read_timeout=30)
    location = puller.location
    findings = []
    for artifact in manifest.stages.values():
        try:
            head = s3.head_object(Bucket=location.bucket, Key=location.key(artifact.file))
        except ClientError as error:
            findings.append(Finding(artifact.file, f"missing or unreadable ({error.response['Error'].get('Code')})"))
            continue
        head = Head(head.get("ContentLength"), head.get("Metadata") or {})
        findings += [Finding(artifact.file, problem) for problem in head_differences(head, artifact)]
        if SHA256_METADATA not in head.metadata:
            findings.append(Finding(artifact.file, "no sha256 metadata; pull it to verify the bytes"))
    return len(manifest.stages), findings


def head_differences(head: Head, artifact: FileEntry | StageArtifact) -> list[str]:
    """How a HEAD answer differs from what the manifest lists (size, and the SHA-256 metadata when present); an
    answer without a usable Content-Length differs too."""
    problems = []
    if head.content_length is None:
        problems.append(f"the store gave no size, manifest says {artifact.size}")
    elif head.content_length != artifact.size:
        problems.append(f"size {head.content_length}, manifest says {artifact.size}")
    recorded = head.metadata.get(SHA256_METADATA)
    if recorded is not None and recorded != artifact.sha256:
        problems.append(f"sha256 metadata {recorded}, manifest says {artifact.sha256}")
    return problems
