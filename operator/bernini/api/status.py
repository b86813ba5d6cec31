"""BerniniDeployment.status: what the operator observed and decided."""

from typing import Literal

from pydantic import Field

from bernini.api.base import ApiModel

CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(max_length=316)
    """Condition type: ArtifactsVerified, Rendered, RayServiceReady, PodsHealthy or the summary Ready."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    observed_generation: int = Field(0, ge=0)
    """The .metadata.generation the condition was computed from."""

    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    """When status last changed."""

    reason: str = Field(pattern=CONDITION_REASON, max_length=1024)
    """CamelCase reason for the last transition."""

    message: str = Field("", max_length=32768)
    """Human-readable detail."""


class WorkerGroupCapacity(ApiModel):
    """Node bounds of one worker group."""

    instance_type: str
    """Instance type of the group."""

    min_replicas: int
    """Fewest worker nodes of this type."""

    max_replicas: int
    """Most worker nodes of this type."""


class Capacity(ApiModel):
    """Capacity computed from the stages' replica bounds and the allowed instance types."""

    min_accelerators: float
    """Accelerators (NeuronCores or GPUs) the stages hold at their minimum replicas."""

    max_accelerators: float
    """Accelerators (NeuronCores or GPUs) the stages hold at their maximum replicas."""

    min_workers: int
    """Worker nodes at minimum replicas."""

    max_workers: int
    """Upper bound on worker nodes (sum of the groups' maxima)."""

    worker_groups: list[WorkerGroupCapacity] = Field(default_factory=list)
    """Per instance type bounds, in the order of spec.accelerator.instanceTypes."""


class RayServiceObservation(ApiModel):
    """What KubeRay reports about the owned RayService."""

    ready: Literal["True", "False", "Unknown"] = "Unknown"
    """The RayService's Ready condition."""

    reason: str = ""
    """Reason of the RayService's Ready condition."""

    upgrade_in_progress: bool = False
    """Whether KubeRay is rolling out a new RayCluster."""

    active_cluster: str = ""
    """Name of the RayCluster serving traffic."""

    pending_cluster: str = ""
    """Name of the RayCluster being prepared by an upgrade."""


class ArtifactsObservation(ApiModel):
    """The artifact set the last successful preflight verified."""

    uri: str
    """The artifacts prefix that was verified."""

    target: str
    """Compilation target recorded in the manifest (inf2 or cpu)."""

    compiler_version: str = ""
    """neuronx-cc version that compiled the stages (empty for the cpu target)."""

    total_bytes: int = 0
    """Sum of the stage files' sizes."""


class BerniniDeploymentStatus(ApiModel):
    """Observed state of a BerniniDeployment."""

    observed_generation: int = 0
    """The .metadata.generation the operator last acted on."""

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """ArtifactsVerified, Rendered, RayServiceReady, PodsHealthy (why a starting RayCluster's pods fail) and the
    summary Ready."""

    ray_service_name: str = ""
    """Name of the owned KubeRay RayService."""

    serve_endpoint: str = ""
    """In-cluster URL of the Ray Serve HTTP endpoint."""

    model_version: str = ""
    """Model version the active RayCluster serves: during an upgrade, the previous one until KubeRay has
    switched traffic to the new cluster."""

    capacity: Capacity | None = None
    """Worker nodes and accelerators at minimum and maximum replicas."""

    artifacts: ArtifactsObservation | None = None
    """The artifact set that passed preflight."""

    ray_service: RayServiceObservation = RayServiceObservation()
    """State of the owned RayService as KubeRay reports it."""
