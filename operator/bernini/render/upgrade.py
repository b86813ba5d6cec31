"""How a changed cluster rolls out: KubeRay's upgradeStrategy, and for the incremental upgrade the accelerator
pod budget the operator holds the clusters to. Pure.

KubeRay's incremental upgrade bounds Serve capacity, not pods: a new cluster starts at its worker groups'
minReplicas, and the old cluster's worker nodes stay until the Ray autoscaler finds them idle. So in this mode
the groups of the accelerator kind run at minReplicas 0 (Serve's own minimum keeps a serving cluster's nodes
busy), a new cluster may ask for the surge beyond the old cluster's pods, and the operator raises that cap as
the old one gives pods back (pending_bounds).

Everything is relative to the baseline: the accelerator worker pods the serving cluster asks for (when an
upgrade began, for the whole upgrade), at least those at every stage's minReplicas. The surge is never less
than the pods one replica of every deployment needs: a new cluster smaller than that serves nothing, and
KubeRay would wait for it forever."""

import math
from dataclasses import dataclass
from typing import Any

from bernini.api.spec import BerniniDeploymentSpec
from bernini.domain.capacity import Plan
from bernini.domain.instances import CATALOGUE
from bernini.render import names
from bernini.render.capacity import plan

KUBERAY_INCREMENTAL = "NewClusterWithIncrementalUpgrade"
# Beyond Serve's downscale delay and the autoscaler's idle timeout: the time a new worker takes to pull and load.
WORKER_START_SECONDS = 60

Bounds = dict[str, tuple[int, int]]  # groupName -> (minReplicas, maxReplicas)


@dataclass(frozen=True)
class Budget:
    pods: int  # the baseline
    surge: int  # the pods a new cluster may ask beyond it
    percent: int  # maxSurgePercent: the share of Serve capacity each step moves


def incremental(spec: BerniniDeploymentSpec) -> bool:
    return spec.upgrade_strategy.type == "Incremental"


def counted(spec: BerniniDeploymentSpec, instance_type: str) -> bool:
    """Whether the budget counts pods of this instance type: any accelerator's (an old cluster may run another
    kind or type than the spec now names), or every type for a CPU-only deployment."""
    instance = CATALOGUE.get(instance_type)
    return instance is not None and (instance.kind != "cpu" or spec.accelerator.kind == "cpu")


def counted_pods(spec: BerniniDeploymentSpec, pods_by_instance_type: dict[str, int]) -> int:
    return sum(pods for instance_type, pods in pods_by_instance_type.items() if counted(spec, instance_type))


def _counted_groups(spec: BerniniDeploymentSpec, capacity: Plan) -> list[tuple[str, int, int]]:
    """(groupName, minReplicas, maxReplicas) of the plan's counted groups, in the spec's order."""
    return [(names.worker_group_name(group.worker.instance.name), group.min_replicas, group.max_replicas)
            for group in capacity.groups if counted(spec, group.worker.instance.name)]


def budget(spec: BerniniDeploymentSpec, capacity: Plan, serving_pods: int = 0) -> Budget:
    """An incremental deployment's budget; serving_pods: the counted pods the serving cluster asks for (0 when
    there is none)."""
    smallest = max(1, sum(low for _, low, _ in _counted_groups(spec, plan(spec, one_replica_each=True))))
    pods = max(smallest, sum(low for _, low, _ in _counted_groups(spec, capacity)), serving_pods)
    percent = spec.upgrade_strategy.incremental.max_surge_percent or min(100, math.ceil(100 * smallest / pods))
    # Rounded half up, as Serve rounds a capacity share of replicas.
    return Budget(pods, max(smallest, (pods * percent + 50) // 100), percent)


def interval_seconds(spec: BerniniDeploymentSpec) -> int:
    """The chosen one, else the time the old cluster takes to give a pod back and the new one to start it: traffic
    moving faster would reach a new cluster still held at its cap."""
    chosen = spec.upgrade_strategy.incremental.interval_seconds
    if chosen:
        return chosen
    delays = spec.autoscaling.downscale_delay_seconds + spec.autoscaling.idle_timeout_seconds
    return math.ceil(delays) + WORKER_START_SECONDS


def upgrade_strategy(spec: BerniniDeploymentSpec, chosen_budget: Budget | None) -> dict[str, Any]:
    """chosen_budget: the incremental deployment's (None for the other types)."""
    if chosen_budget is None:
        return {"type": spec.upgrade_strategy.type}
    chosen = spec.upgrade_strategy.incremental
    return {"type": KUBERAY_INCREMENTAL, "clusterUpgradeOptions": {
        "gatewayClassName": chosen.gateway_class_name,
        "maxSurgePercent": chosen_budget.percent,
        "stepSizePercent": chosen.step_size_percent or chosen_budget.percent,
        "intervalSeconds": interval_seconds(spec),
    }}


def serving_bounds(spec: BerniniDeploymentSpec, capacity: Plan) -> Bounds:
    """What the serving RayCluster's groups carry: the plan's bounds, with minReplicas 0 for the counted groups
    of an incremental deployment (an upgrade's old cluster must be able to give its nodes back)."""
    bounded = incremental(spec)
    return {names.worker_group_name(group.worker.instance.name):
            (0 if bounded and counted(spec, group.worker.instance.name) else group.min_replicas, group.max_replicas)
            for group in capacity.groups}


def new_cluster_bounds(spec: BerniniDeploymentSpec, capacity: Plan, chosen_budget: Budget | None) -> Bounds:
    """What a new RayCluster starts with (the RayService's groups): the serving bounds, except that under an
    incremental upgrade each counted group may ask at most the surge."""
    result = serving_bounds(spec, capacity)
    if chosen_budget is not None:
        for name, _, high in _counted_groups(spec, capacity):
            result[name] = (0, min(chosen_budget.surge, high))
    return result


def pending_bounds(spec: BerniniDeploymentSpec, capacity: Plan, chosen_budget: Budget, others: int,
                   pending_pods: dict[str, int]) -> Bounds:
    """The new cluster's counted groups' bounds while an incremental upgrade runs. others: the counted pods of
    every other cluster of the deployment (the old one, and one a rollback left). The room left in the budget is
    offered to each group, since any of them may be where a stage fits: with several accelerator instance types
    they may together ask more for as long as the next reconcile takes to see it. A group's maximum never falls
    below the pods it has (KubeRay would delete one)."""
    by_group = {names.worker_group_name(instance_type): pods for instance_type, pods in pending_pods.items()}
    room = chosen_budget.pods + chosen_budget.surge - others - counted_pods(spec, pending_pods)
    result = {}
    for name, _, high in _counted_groups(spec, capacity):
        has = by_group.get(name, 0)
        result[name] = (0, has + max(0, min(room, high - has)))
    return result
