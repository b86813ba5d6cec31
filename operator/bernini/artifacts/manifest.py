"""manifest.json: the one description of a compiled artifact set, written last by `bernini compile`."""

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from bernini.api.base import WireModel
# The file's name, version and key rules are manifest_files' (the init container reads it without pydantic);
# they are imported from here too.
from bernini.artifacts.manifest_files import (MANIFEST_FILE, MAX_KEY, MAX_NAME, MAX_STAGE_BYTES, MAX_STAGES, SHA256,
                                              SUPPORTED_MANIFEST_VERSIONS, UNSAFE_KEY, UnsupportedManifestVersion,
                                              check_key, check_one_artifact_per_file, load_document)
from bernini.domain.instances import TARGETS

Target = Literal[TARGETS]
# The torch device a target's graphs run on; Neuron graphs take CPU tensors and move them themselves.
DEVICE_OF_TARGET = {"inf2": "cpu", "cuda": "cuda", "cpu": "cpu"}
# Per stage: at most 3 inputs of at most 5 dimensions and 3 compiler flags today; the caps leave ten times room.
MAX_INPUTS = 16
MAX_DIMENSIONS = 16
MAX_COMPILER_ARGS = 64
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
    size: int = Field(ge=0, le=MAX_STAGE_BYTES, strict=True)  # as the init container reads it: a JSON integer
    neuron_cores: int = Field(0, ge=0)
    """NeuronCores the compiled graph needs (0 for the cuda and cpu targets)."""

    inputs: list[TensorSpec] = Field(default_factory=list, max_length=MAX_INPUTS)
    compiler_args: list[Name] = Field(default_factory=list, max_length=MAX_COMPILER_ARGS)

    @field_validator("file")
    @classmethod
    def _stays_inside_prefix(cls, key: str) -> str:
        return check_key(key)


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
        check_one_artifact_per_file(artifact.file for artifact in stages.values())
        return stages

    def of_stage(self, stage: str) -> list[StageArtifact]:
        return [artifact for artifact in self.stages.values() if artifact.stage == stage]

    @property
    def total_bytes(self) -> int:
        return sum(stage.size for stage in self.stages.values())


def parse_manifest(raw: bytes) -> Manifest:
    """Raises ValueError with a specific message for any manifest this version cannot use, in time linear in
    its size whatever it holds."""
    document = load_document(raw)
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part)[:64] for part in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
        raise ValueError(f"manifest.json is invalid: {problems}") from None
