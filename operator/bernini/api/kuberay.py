"""What the operator reads back from KubeRay's RayService status, typed once per reconcile. Anyone who may write
a RayService may write its status, so every field reads tolerantly: one of an unexpected shape reads as absent
and the rest is kept; fields KubeRay adds are ignored."""

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WrapValidator
from pydantic.alias_generators import to_camel

from bernini.api.status import CONDITION_REASON

READY = "Ready"  # KubeRay's condition types
UPGRADE_IN_PROGRESS = "UpgradeInProgress"


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
    serve_deployment_statuses: Annotated[dict[str, Annotated[ServeDeploymentStatus, _or(ServeDeploymentStatus)]],
                                         _or(dict)] = Field(default_factory=dict)


class RayClusterStatus(_Read):
    desired_worker_replicas: Annotated[int | None, _or(None)] = Field(None, ge=0)
    """The autoscaler's worker count across the cluster's groups."""


class ClusterSide(_Read):
    """activeServiceStatus or pendingServiceStatus: one RayCluster and what runs on it."""

    ray_cluster_name: Text = ""
    ray_cluster_status: Annotated[RayClusterStatus, _or(RayClusterStatus)] = RayClusterStatus()
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
    def desired_workers(self) -> int | None:
        """Workers KubeRay wants across the active and pending clusters, or None before it reported any."""
        counts = [side.ray_cluster_status.desired_worker_replicas
                  for side in (self.active_service_status, self.pending_service_status)]
        counts = [count for count in counts if count is not None]
        return sum(counts) if counts else None


def rayservice_status(rayservice: dict[str, Any] | None) -> RayServiceStatus | None:
    """The typed status of a RayService as the API server holds it; None when there is no RayService."""
    if rayservice is None:
        return None
    status = rayservice.get("status")
    return RayServiceStatus.model_validate(status if isinstance(status, dict) else {})
