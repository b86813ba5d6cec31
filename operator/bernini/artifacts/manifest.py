"""manifest.json: the one description of a compiled artifact set, written last by `bernini compile`."""

import json
from collections import Counter
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from bernini.api.base import WireModel
from bernini.domain.instances import TARGETS

MANIFEST_FILE = "manifest.json"
UNSAFE_KEY = "must be a plain relative path inside the artifacts prefix"  # the puller exits 7 on it
Target = Literal[TARGETS]
# The torch device a target's graphs run on; Neuron graphs take CPU tensors and move them themselves.
DEVICE_OF_TARGET = {"inf2": "cpu", "cuda": "cuda", "cpu": "cpu"}
SUPPORTED_MANIFEST_VERSIONS = (1,)
SHA256 = r"^[0-9a-f]{64}$"
# Bounds on what a manifest may hold, so that a hostile one costs little to read and cannot grow what the operator
# stores, checks and HEADs. A Bernini manifest lists 6 graphs (one encoder per input modality, the diffusion, one
# decoder per batch bucket: model/reference.py), each with at most 3 inputs of at most 5 dimensions and 3
# compiler flags; the caps leave room for ten times as many modalities and buckets.
MAX_STAGES = 64
MAX_INPUTS = 16
MAX_DIMENSIONS = 16
MAX_COMPILER_ARGS = 64
MAX_NAME = 256  # names, versions, dtypes, compiler flags
MAX_KEY = 1024  # S3's own limit on an object key
MAX_STAGE_BYTES = 5 << 40  # S3's largest object (5 TiB); 64 of them still fit status's int64 totalBytes
Name = Annotated[str, Field(max_length=MAX_NAME)]


class TensorSpec(WireModel):
    """A static input shape the stage was traced with."""

    name: Name
    shape: list[int] = Field(max_length=MAX_DIMENSIONS)
    dtype: Name


class StageArtifact(WireModel):
    """One compiled graph of a pipeline stage (the encoder stage has one per input modality)."""

    stage: Name
    """Pipeline stage the graph belongs to: encoder, diffusion or decoder."""

    file: str = Field(min_length=1, max_length=MAX_KEY)
    """Key of the stage file relative to the artifacts prefix."""

    sha256: str = Field(pattern=SHA256)
    size: int = Field(ge=0, le=MAX_STAGE_BYTES)
    neuron_cores: int = Field(0, ge=0)
    """NeuronCores the compiled graph needs (0 for the cuda and cpu targets)."""

    inputs: list[TensorSpec] = Field(default_factory=list, max_length=MAX_INPUTS)
    compiler_args: list[Name] = Field(default_factory=list, max_length=MAX_COMPILER_ARGS)

    @field_validator("file")
    @classmethod
    def _stays_inside_prefix(cls, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"stage file key {key!r} {UNSAFE_KEY}")
        # The puller writes <file>.partial beside each file and the manifest last, under its own name.
        if key == MANIFEST_FILE or key.endswith(".partial"):
            raise ValueError(f"stage file key {key!r} collides with the puller's own files")
        return key


class Toolchain(WireModel):
    """Versions that produced the artifacts; neuronx-cc artifacts load only on the same compiler major, and
    cuda artifacts need a runtime whose CUDA major is at least the one they were traced with."""

    torch: Name
    torch_neuronx: Name | None = None
    neuronx_cc: Name | None = None
    cuda: Name | None = None
    gpu: Name | None = None
    """The GPU the cuda graphs were traced on (informational)."""


class ModelIdentity(WireModel):
    name: Name
    version: Name


class Manifest(WireModel):
    """manifest.json, version 1. `stages` maps artifact names (e.g. encoder-image) to their files."""

    manifest_version: int
    model: ModelIdentity
    target: Target
    toolchain: Toolchain
    stages: dict[Name, StageArtifact] = Field(max_length=MAX_STAGES)
    created_at: Name = ""

    @field_validator("stages")
    @classmethod
    def _one_artifact_per_file(cls, stages: dict[str, StageArtifact]) -> dict[str, StageArtifact]:
        files = Counter(artifact.file for artifact in stages.values())
        if duplicated := sorted(file for file, count in files.items() if count > 1):
            raise ValueError(f"two stages share the file {duplicated[0]!r}")
        return stages

    def of_stage(self, stage: str) -> list[StageArtifact]:
        return [artifact for artifact in self.stages.values() if artifact.stage == stage]

    @property
    def total_bytes(self) -> int:
        return sum(stage.size for stage in self.stages.values())


def parse_manifest(raw: bytes) -> Manifest:
    """Raises ValueError with a specific message for any manifest this version cannot use, in time linear in
    its size whatever it holds."""
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
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part)[:64] for part in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
        raise ValueError(f"manifest.json is invalid: {problems}") from None


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


class UnsupportedManifestVersion(ValueError):
    pass
