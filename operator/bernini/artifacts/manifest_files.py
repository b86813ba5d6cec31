"""What the init container reads of manifest.json: the files, their SHA-256 and sizes, without pydantic.

The operator validates the whole manifest (bernini.artifacts.manifest, whose models build on the rules here) and
pins its digest, so a pull only ever reads a manifest already checked in full; this reader still refuses anything
it relies on being wrong: a version it does not know, a key leaving the prefix, a digest or size out of shape.
"""

import json
import re
from collections import Counter
from dataclasses import dataclass

MANIFEST_FILE = "manifest.json"
UNSAFE_KEY = "must be a plain relative path inside the artifacts prefix"  # the puller exits 7 on it
SUPPORTED_MANIFEST_VERSIONS = (1,)
SHA256 = r"^[0-9a-f]{64}$"
# Bounds on what a manifest may hold, so that a hostile one costs little to read and cannot grow what the operator
# stores, checks and HEADs. A Bernini manifest lists 6 graphs (one encoder per input modality, the diffusion, one
# decoder per batch bucket: model/reference.py); the cap leaves room for ten times as many.
MAX_STAGES = 64
MAX_NAME = 256  # names, versions, dtypes, compiler flags
MAX_KEY = 1024  # S3's own limit on an object key
MAX_STAGE_BYTES = 5 << 40  # S3's largest object (5 TiB); 64 of them still fit status's int64 totalBytes


class UnsupportedManifestVersion(ValueError):
    pass


@dataclass(frozen=True)
class FileEntry:
    """One stage file as a pull needs it."""

    file: str
    sha256: str
    size: int


def check_key(key: str) -> str:
    """key, when it names a file inside the artifacts prefix that the puller's own files cannot collide with."""
    parts = key.split("/")
    if key.startswith("/") or any(part in ("", ".", "..") for part in parts) or not key.isprintable():
        raise ValueError(f"stage file key {key!r} {UNSAFE_KEY}")
    # The puller writes <file>.partial beside each file and the manifest last, under its own name.
    if key == MANIFEST_FILE or key.endswith(".partial"):
        raise ValueError(f"stage file key {key!r} collides with the puller's own files")
    return key


def load_document(raw: bytes) -> dict:
    """The manifest's JSON object, once its version is one this code reads; ValueError with a specific message
    otherwise, in time linear in its size whatever it holds."""
    try:
        document = json.loads(raw, object_pairs_hook=_refuse_duplicate_keys)
    except ValueError as error:  # also an integer of more than 4300 digits, refused before it is converted
        raise ValueError(f"manifest.json is not JSON: {error}") from None
    except RecursionError:
        raise ValueError("manifest.json is not a manifest: arrays or objects nested too deep to read") from None
    version = document.get("manifestVersion") if isinstance(document, dict) else None
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise UnsupportedManifestVersion(
            f"manifestVersion {_quoted(version)} is not supported (supported: {list(SUPPORTED_MANIFEST_VERSIONS)})"
        )
    return document


def files_of(raw: bytes) -> list[FileEntry]:
    """The files manifest.json lists; ValueError naming the first field a pull cannot use."""
    stages = load_document(raw).get("stages")
    if not isinstance(stages, dict) or len(stages) > MAX_STAGES:
        raise ValueError(f"manifest.json is invalid: stages must be an object of at most {MAX_STAGES} entries")
    entries = []
    for name, stage in stages.items():
        where = f"manifest.json is invalid: stages.{name[:64]}"
        if len(name) > MAX_NAME or not isinstance(stage, dict):
            raise ValueError(f"{where}: not a stage")
        file, sha256, size = stage.get("file"), stage.get("sha256"), stage.get("size")
        if not isinstance(file, str) or not 0 < len(file) <= MAX_KEY:
            raise ValueError(f"{where}.file: a key of 1 to {MAX_KEY} characters is needed")
        check_key(file)
        if not isinstance(sha256, str) or not re.fullmatch("[0-9a-f]{64}", sha256):
            raise ValueError(f"{where}.sha256: 64 lowercase hex digits are needed")
        if type(size) is not int or not 0 <= size <= MAX_STAGE_BYTES:
            raise ValueError(f"{where}.size: a whole number of bytes from 0 to {MAX_STAGE_BYTES} is needed")
        entries.append(FileEntry(file, sha256, size))
    check_one_artifact_per_file(entry.file for entry in entries)
    return entries


def check_one_artifact_per_file(files) -> None:
    """Each file belongs to one stage, and no file's path is another's folder (a and a/b cannot both exist)."""
    counted = Counter(files)
    if duplicated := sorted(file for file, count in counted.items() if count > 1):
        raise ValueError(f"two stages share the file {duplicated[0]!r}")
    folders = {file.rsplit("/", 1)[0] for file in counted if "/" in file}
    folders |= {folder.rsplit("/", i)[0] for folder in folders for i in range(1, folder.count("/") + 1)}
    if clashing := sorted(folders & set(counted)):
        raise ValueError(f"stage file key {clashing[0]!r} is also the folder of another stage's file")


def _quoted(value: object) -> str:
    """A value as an error shows it: a scalar cut short, a list or object (however large or deep) by its type."""
    return f"of type {type(value).__name__}" if isinstance(value, (list, dict)) else repr(value)[:64]


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads keeps the last of two equal keys: two "encoder" entries would silently become one. Counted,
    # not searched for: an object of 100,000 keys would otherwise take minutes.
    document = dict(pairs)
    if len(document) < len(pairs):
        duplicated = min(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"key {duplicated[:64]!r} appears twice")
    return document
