"""What the operator reads back from KubeRay's RayService status, typed once per reconcile. Fields KubeRay adds
are ignored; a status of an unexpected shape reads as one KubeRay has not written yet."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class _Read(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class RayCondition(_Read):
    type: str
    status: str = "Unknown"
    reason: str = ""
    message: str = ""


class ServeDeploymentStatus(_Read):
    status: str = ""
    message: str = ""


class ApplicationStatus(_Read):
    serve_deployment_statuses: dict[str, ServeDeploymentStatus] = Field(default_factory=dict)


class RayClusterStatus(_Read):
    desired_worker_replicas: int | None = None
    """The autoscaler's worker count across the cluster's groups."""


class ClusterSide(_Read):
    """activeServiceStatus or pendingServiceStatus: one RayCluster and what runs on it."""

    ray_cluster_name: str = ""
    ray_cluster_status: RayClusterStatus = RayClusterStatus()
    application_statuses: dict[str, ApplicationStatus] = Field(default_factory=dict)


class RayServiceStatus(_Read):
    conditions: list[RayCondition] = Field(default_factory=list)
    active_service_status: ClusterSide = ClusterSide()
    pending_service_status: ClusterSide = ClusterSide()

    def condition(self, condition_type: str) -> RayCondition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)

    @property
    def ready(self) -> bool:
        ready = self.condition("Ready")
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
    try:
        return RayServiceStatus.model_validate(rayservice.get("status") or {})
    except ValidationError:
        return RayServiceStatus()  # an unreadable status tells as much as one KubeRay has not written yet
