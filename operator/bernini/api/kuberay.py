"""What the operator reads back from KubeRay's objects: a RayService's status, typed once per reconcile, and the
worker pods each RayCluster asks for. Anyone who may write them may write anything there, so every field reads
tolerantly: one of an unexpected shape reads as absent and the rest is kept; fields KubeRay adds are ignored."""

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WrapValidator
from pydantic.alias_generators import to_camel

from bernini.api.status import CONDITION_REASON

READY = "Ready"  # KubeRay's condition types
UPGRADE_IN_PROGRESS = "UpgradeInProgress"
# A label KubeRay puts on the RayClusters it makes for a RayService ("RayService"), beside a copy of the
# RayService's own labels.
ORIGINATED_FROM_CRD = "ray.io/originated-from-crd"


def _or(default):
    """A field validator that reads a value of the wrong shape as default (called when it is a type)."""
    def tolerant(value, read):
        try:
            return read(value)
        except ValidationError:
            return default() if isinstance(default, type) else default
    return WrapValidator(tolerant)


Text = Annotated[str, _or("")]


class _Read(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


def _condition_status(value: str) -> str:
    return value if value in ("True", "False", "Unknown") else "Unknown"


def _condition_reason(value: str) -> str:
    """A reason our own condition can carry, or "" (a mirrored reason must fit metav1.Condition's rules)."""
    return value if len(value) <= 1024 and re.fullmatch(CONDITION_REASON, value) else ""


class RayCondition(_Read):
    type: Text = ""
    status: Annotated[str, AfterValidator(_condition_status), _or("Unknown")] = "Unknown"
    reason: Annotated[str, AfterValidator(_condition_reason), _or("")] = ""
    message: Text = ""


class ServeDeploymentStatus(_Read):
    status: Text = ""
    message: Text = ""


class ApplicationStatus(_Read):
    status: Text = ""
    message: Text = ""
    serve_deployment_statuses: Annotated[dict[str, Annotated[ServeDeploymentStatus, _or(ServeDeploymentStatus)]],
                                         _or(dict)] = Field(default_factory=dict)


Percent = Annotated[int | None, Field(ge=0, le=100), _or(None)]


class ClusterSide(_Read):
    """activeServiceStatus or pendingServiceStatus: one RayCluster and what runs on it."""

    ray_cluster_name: Text = ""
    # An incremental upgrade's share of Serve capacity and of the traffic on this cluster.
    target_capacity: Percent = None
    traffic_routed_percent: Percent = None
    application_statuses: Annotated[dict[str, Annotated[ApplicationStatus, _or(ApplicationStatus)]],
                                    _or(dict)] = Field(default_factory=dict)


class RayServiceStatus(_Read):
    conditions: Annotated[list[Annotated[RayCondition, _or(RayCondition)]], _or(list)] = Field(default_factory=list)
    active_service_status: Annotated[ClusterSide, _or(ClusterSide)] = ClusterSide()
    pending_service_status: Annotated[ClusterSide, _or(ClusterSide)] = ClusterSide()

    def condition(self, condition_type: str) -> RayCondition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)

    @property
    def ready(self) -> bool:
        ready = self.condition(READY)
        return ready is not None and ready.status == "True"

    @property
    def switched_cluster(self) -> str:
        """The active RayCluster when no other is pending (KubeRay finished switching), else ''."""
        return "" if self.pending_service_status.ray_cluster_name else self.active_service_status.ray_cluster_name

    @property
    def starting_clusters(self) -> list[str]:
        """The RayClusters whose pods may be failing to start: the pending one, and the active one until the
        RayService is Ready. A Ready RayService with nothing pending needs no look at its pods."""
        pending = self.pending_service_status.ray_cluster_name
        active = "" if self.ready else self.active_service_status.ray_cluster_name
        return [name for name in (pending, active) if name]

    @property
    def cluster_names(self) -> list[str]:
        """The active and the pending RayCluster, those that exist."""
        return [name for name in (self.active_service_status.ray_cluster_name,
                                  self.pending_service_status.ray_cluster_name) if name]


def rayservice_status(rayservice: dict[str, Any] | None) -> RayServiceStatus | None:
    """The typed status of a RayService as the API server holds it; None when there is no RayService."""
    if rayservice is None:
        return None
    status = rayservice.get("status")
    return RayServiceStatus.model_validate(status if isinstance(status, dict) else {})


Count = Annotated[int | None, _or(None)]


class WorkerGroupSpec(_Read):
    group_name: Text = ""
    replicas: Count = Field(None, ge=0)
    min_replicas: Count = Field(None, ge=0)
    max_replicas: Count = Field(None, ge=0)
    num_of_hosts: Annotated[int, _or(1)] = Field(1, ge=0)
    suspend: Annotated[bool, _or(False)] = False

    @property
    def pods(self) -> int:
        """The worker pods KubeRay wants for this group, counted as KubeRay counts them: the autoscaler's replicas
        held within the group's bounds, times the hosts per replica."""
        if self.suspend:
            return 0
        low = self.min_replicas or 0
        if self.replicas is None or self.replicas < low:
            replicas = low
        elif self.max_replicas is not None and self.replicas > self.max_replicas:
            replicas = self.max_replicas
        else:
            replicas = self.replicas
        return replicas * self.num_of_hosts


class RayClusterSpec(_Read):
    suspend: Annotated[bool, _or(False)] = False
    worker_group_specs: Annotated[list[Annotated[WorkerGroupSpec, _or(WorkerGroupSpec)]], _or(list)] = Field(
        default_factory=list)


def worker_pods(raycluster: dict[str, Any]) -> dict[str, int]:
    """groupName -> the worker pods KubeRay wants for a RayCluster now (0 for every group of a suspended cluster)."""
    spec = raycluster.get("spec")
    read = RayClusterSpec.model_validate(spec if isinstance(spec, dict) else {})
    pods: dict[str, int] = {}
    for group in read.worker_group_specs:
        if group.group_name:
            pods[group.group_name] = pods.get(group.group_name, 0) + (0 if read.suspend else group.pods)
    return pods
