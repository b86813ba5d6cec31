"""BerniniDeployment.status: what the operator observed and decided."""

from typing import Any, Literal

from pydantic import Field, ValidationError

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

    pending_capacity_percent: int | None = Field(None, ge=0, le=100)
    """During an incremental upgrade: the share of Serve capacity the pending cluster has been given."""

    pending_traffic_percent: int | None = Field(None, ge=0, le=100)
    """During an incremental upgrade: the share of traffic the Gateway sends to the pending cluster."""

    pending_since: str | None = Field(None, json_schema_extra={"format": "date-time"})
    """When the operator first saw the pending cluster: its deadline (spec.upgradeStrategy.deadlineSeconds) runs
    from here."""

    upgrade_baseline_pods: int | None = Field(None, ge=1)
    """During an incremental upgrade: the accelerator worker pods the old cluster asked for when it began (at
    least those at minReplicas); both clusters together may ask for these plus the surge."""


class AbandonedUpgrade(ApiModel):
    """An upgrade given back at its deadline; the spec's generation it was for stays abandoned until the spec
    changes."""

    generation: int = Field(ge=0)
    """The .metadata.generation whose upgrade was given back."""

    model_version: str
    """The model version that did not come to serve."""

    at: str = Field(json_schema_extra={"format": "date-time"})
    """When it was given back."""

    message: str = Field(max_length=4096)
    """Why: the failing pods' reason, or what Ray Serve said about the new cluster's applications."""


class ArtifactsObservation(ApiModel):
    """The artifact set the last successful preflight verified."""

    uri: str
    """The artifacts prefix that was verified."""

    target: str
    """Compilation target recorded in the manifest (the accelerator kind's target)."""

    compiler_version: str = ""
    """neuronx-cc version that compiled the stages (empty for the cpu target)."""

    total_bytes: int = 0
    """Sum of the stage files' sizes."""

    manifest_sha256: str = ""
    """SHA-256 of manifest.json: the workers' init containers refuse any other manifest."""


class InstanceTypeCost(ApiModel):
    """The workers of one instance type now."""

    instance_type: str
    """Instance type of the worker group."""

    workers: int
    """Worker nodes of this type counted now."""

    dollars_per_hour: float
    """What they cost together, $/hour."""


class Cost(ApiModel):
    """What the worker nodes cost by the hour, from the operator's price table (the Ray head shares a CPU node
    and is not counted)."""

    current_dollars_per_hour: float
    """$/hour of the worker pods KubeRay wants now in each group, the pending cluster's included during an
    upgrade."""

    min_dollars_per_hour: float
    """$/hour at every stage's minReplicas."""

    max_dollars_per_hour: float
    """$/hour at every worker group's maximum."""

    workers: int
    """Worker nodes counted in currentDollarsPerHour."""

    instance_types: list[InstanceTypeCost] = Field(default_factory=list)
    """The current figure by instance type."""

    unpriced_instance_types: list[str] = Field(default_factory=list)
    """Instance types the price table has no price for (counted as free: override the prices)."""

    price_source: str
    """Where the prices come from (the shipped table or the platform team's override)."""

    prices_as_of: str
    """When those prices were recorded."""


class StageObservation(ApiModel):
    """One Serve deployment of the pipeline as KubeRay reports it (its status carries no replica counts)."""

    name: str
    """Serve deployment name."""

    status: str
    """Ray Serve's deployment status: HEALTHY, UPDATING, UPSCALING, DOWNSCALING or UNHEALTHY."""

    message: str = Field("", max_length=4096)
    """Ray Serve's message, when it gave one."""

    min_replicas: int
    """spec minReplicas of the stage."""

    max_replicas: int
    """spec maxReplicas of the stage."""


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

    stages: list[StageObservation] = Field(default_factory=list)
    """The serving cluster's Serve deployments, in pipeline order, once KubeRay reports them."""

    cost: Cost | None = None
    """What the worker nodes cost by the hour: now, at minimum and at maximum."""

    abandoned_upgrade: AbandonedUpgrade | None = None
    """The last upgrade given back at its deadline, while the spec is still the one it was for."""

    serving_ray_service_spec: str = Field("", max_length=131072)
    """The RayService spec the serving cluster runs (zlib, base64), recorded whenever KubeRay has settled on one:
    what an upgrade past its deadline goes back to."""


def read_back(stored: Any) -> BerniniDeploymentStatus:
    """The status as the API server holds it, typed. A field that no longer reads as the model (an older
    operator wrote it, or anyone who may write status) is dropped, and the rest kept."""
    if not isinstance(stored, dict):
        stored = {}
    try:
        return BerniniDeploymentStatus.model_validate(stored)
    except ValidationError:
        kept = {}
        for field in BerniniDeploymentStatus.model_fields.values():
            if field.alias in stored:
                value = stored[field.alias]
                if field.alias == "conditions" and isinstance(value, list):
                    # One bad entry must not reset every other condition's lastTransitionTime.
                    value = [entry for entry in value if _reads(Condition, entry)]
                if _reads(BerniniDeploymentStatus, {field.alias: value}):
                    kept[field.alias] = value
        return BerniniDeploymentStatus.model_validate(kept)


def _reads(model: type[ApiModel], value: Any) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


# Observations a status may stop carrying (a blocked spec no longer reports capacity): a JSON merge patch must
# name them as null to remove them.
OPTIONAL_OBSERVATIONS = tuple(field.alias for field in BerniniDeploymentStatus.model_fields.values()
                              if field.default is None)
OPTIONAL_RAY_SERVICE = tuple(field.alias for field in RayServiceObservation.model_fields.values()
                             if field.default is None)
