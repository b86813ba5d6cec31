"""manifest.json: the one description of a compiled artifact set, written last by `bernini compile`."""

import json
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from bernini.api.base import WireModel

MANIFEST_FILE = "manifest.json"
UNSAFE_KEY = "must be a plain relative path inside the artifacts prefix"  # the puller exits 7 on it
Target = Literal["inf2", "cuda", "cpu"]
# The torch device a target's graphs run on; Neuron graphs take CPU tensors and move them themselves.
DEVICE_OF_TARGET = {"inf2": "cpu", "cuda": "cuda", "cpu": "cpu"}
SUPPORTED_MANIFEST_VERSIONS = (1,)
SHA256 = r"^[0-9a-f]{64}$"


class TensorSpec(WireModel):
    """A static input shape the stage was traced with."""

    name: str
    shape: list[int]
    dtype: str


class StageArtifact(WireModel):
    """One compiled graph of a pipeline stage (the encoder stage has one per input modality)."""

    stage: str
    """Pipeline stage the graph belongs to: encoder, diffusion or decoder."""

    file: str = Field(min_length=1)
    """Key of the stage file relative to the artifacts prefix."""

    sha256: str = Field(pattern=SHA256)
    size: int = Field(ge=0)
    neuron_cores: int = Field(0, ge=0)
    """NeuronCores the compiled graph needs (0 for the cuda and cpu targets)."""

    inputs: list[TensorSpec] = Field(default_factory=list)
    compiler_args: list[str] = Field(default_factory=list)

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

    torch: str
    torch_neuronx: str | None = None
    neuronx_cc: str | None = None
    cuda: str | None = None
    gpu: str | None = None
    """The GPU the cuda graphs were traced on (informational)."""


class ModelIdentity(WireModel):
    name: str
    version: str


class Manifest(WireModel):
    """manifest.json, version 1. `stages` maps artifact names (e.g. encoder-image) to their files."""

    manifest_version: int
    model: ModelIdentity
    target: Target
    toolchain: Toolchain
    stages: dict[str, StageArtifact]
    created_at: str = ""

    @field_validator("stages")
    @classmethod
    def _one_artifact_per_file(cls, stages: dict[str, StageArtifact]) -> dict[str, StageArtifact]:
        files = [artifact.file for artifact in stages.values()]
        if duplicated := sorted({file for file in files if files.count(file) > 1}):
            raise ValueError(f"two stages share the file {duplicated[0]!r}")
        return stages

    def of_stage(self, stage: str) -> list[StageArtifact]:
        return [artifact for artifact in self.stages.values() if artifact.stage == stage]

    @property
    def total_bytes(self) -> int:
        return sum(stage.size for stage in self.stages.values())


def parse_manifest(raw: bytes) -> Manifest:
    """Raises ValueError with a specific message for any manifest this version cannot use."""
    try:
        document = json.loads(raw, object_pairs_hook=_refuse_duplicate_keys)
    except ValueError as error:
        raise ValueError(f"manifest.json is not JSON: {error}") from None
    version = document.get("manifestVersion") if isinstance(document, dict) else None
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise UnsupportedManifestVersion(
            f"manifestVersion {version!r} is not supported (supported: {list(SUPPORTED_MANIFEST_VERSIONS)})"
        )
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise ValueError(f"manifest.json is invalid: {problems}") from None


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads keeps the last of two equal keys: two "encoder" entries would silently become one.
    keys = [key for key, _ in pairs]
    if duplicated := sorted({key for key in keys if keys.count(key) > 1}):
        raise ValueError(f"key {duplicated[0]!r} appears twice")
    return dict(pairs)


class UnsupportedManifestVersion(ValueError):
    pass
