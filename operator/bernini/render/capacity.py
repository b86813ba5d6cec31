"""How stage replicas pack onto worker nodes, and the worker-group bounds that follow.

Packing rule (one Ray worker pod per node, taking all of the node's accelerators: NeuronCores or GPUs):
- A worker pod on instance type T offers T's accelerators, its vCPUs less one (kubelet and
  daemonsets), and 80% of its memory, unless spec.workers sets smaller CPUs or memory. A stage
  replica asks for (accelerators, cpus, memory), a GPU fraction included; the ingress is packed like a
  stage with no accelerators. CPU stages ride on the workers' spare vCPUs.
- A stage fits T when one replica fits an empty worker pod of T. A stage that fits no allowed type is
  an error the user must fix (condition Rendered=False, reason StageDoesNotFit).
- Minimum: every deployment's minReplicas go to its home type (the smallest allowed type it fits),
  packed first-fit decreasing; that node count is the group's minReplicas.
- Maximum: each group's maxReplicas is the node count that holds maxReplicas of every deployment
  that fits T, so Ray's autoscaler may pick any allowed type without running out of nodes.
"""

from dataclasses import dataclass
from decimal import Decimal

from bernini.api.spec import BerniniDeploymentSpec, ReplicaSpec
from bernini.instances import CATALOGUE, KINDS, InstanceType
from bernini.render.quantity import to_bytes


@dataclass(frozen=True)
class WorkerShape:
    """What one worker pod on an instance type offers: all its accelerators, CPUs and memory."""

    instance: InstanceType
    cpus: int
    memory_bytes: int

    @property
    def accelerators(self) -> int:
        return self.instance.accelerators

    @classmethod
    def of(cls, instance: InstanceType, spec: BerniniDeploymentSpec) -> "WorkerShape":
        cpus = spec.workers.cpus or instance.worker_cpus
        memory = to_bytes(spec.workers.memory) if spec.workers.memory else instance.worker_memory_bytes
        if cpus > instance.worker_cpus or memory > instance.worker_memory_bytes:
            raise WorkerDoesNotFit(
                f"spec.workers asks {cpus} CPUs and {memory // 2**20}Mi per worker pod; {instance.name} offers at "
                f"most {instance.worker_cpus} CPUs and {instance.worker_memory_bytes // 2**20}Mi"
            )
        return cls(instance, cpus, memory)


@dataclass(frozen=True)
class Demand:
    """What one replica of a deployment asks of a worker pod."""

    deployment: str
    accelerators: Decimal
    cpus: Decimal
    memory_bytes: int

    @classmethod
    def of(cls, deployment: str, spec: ReplicaSpec, kind: str) -> "Demand":
        return cls(deployment, Decimal(str(spec.amount(deployment, kind))), Decimal(str(spec.cpus)),
                   to_bytes(spec.memory))

    def fits(self, worker: WorkerShape) -> bool:
        return (
            self.accelerators <= worker.accelerators
            and self.cpus <= worker.cpus
            and self.memory_bytes <= worker.memory_bytes
        )


@dataclass(frozen=True)
class GroupBounds:
    worker: WorkerShape
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Plan:
    groups: tuple[GroupBounds, ...]
    min_accelerators: Decimal
    max_accelerators: Decimal

    @property
    def min_workers(self) -> int:
        return sum(group.min_replicas for group in self.groups)

    @property
    def max_workers(self) -> int:
        return sum(group.max_replicas for group in self.groups)


class DoesNotFit(ValueError):
    """The spec asks for more than the allowed instance types hold; `reason` names the condition reason."""

    reason = "DoesNotFit"


class StageDoesNotFit(DoesNotFit):
    """A deployment's replica is larger than a worker pod of every allowed instance type."""

    reason = "StageDoesNotFit"


class WorkerDoesNotFit(DoesNotFit):
    """spec.workers asks for a worker pod larger than an allowed instance type offers."""

    reason = "WorkerDoesNotFit"


def _nodes_needed(replicas: list[Demand], worker: WorkerShape) -> int:
    """First-fit decreasing over three dimensions; returns the node count."""
    free: list[list] = []  # per node: [accelerators, cpus, memory]
    ordered = sorted(replicas, key=lambda d: (d.accelerators, d.cpus, d.memory_bytes), reverse=True)
    for demand in ordered:
        for node in free:
            if demand.accelerators <= node[0] and demand.cpus <= node[1] and demand.memory_bytes <= node[2]:
                break
        else:
            node = [Decimal(worker.accelerators), worker.cpus, worker.memory_bytes]
            free.append(node)
        node[0] -= demand.accelerators
        node[1] -= demand.cpus
        node[2] -= demand.memory_bytes
    return len(free)


def deployments(spec: BerniniDeploymentSpec) -> list[tuple[str, ReplicaSpec]]:
    return [*spec.stages.items(), ("ingress", spec.ingress)]


def plan(spec: BerniniDeploymentSpec) -> Plan:
    """Worker-group bounds and accelerator totals for spec; raises a DoesNotFit."""
    kind = spec.accelerator.kind
    allowed = [WorkerShape.of(CATALOGUE[name], spec) for name in spec.accelerator.allowed_types]
    by_size = sorted(allowed, key=lambda w: (w.accelerators, w.instance.vcpus))
    minimum: dict[str, list[Demand]] = {w.instance.name: [] for w in allowed}
    maximum: dict[str, list[Demand]] = {w.instance.name: [] for w in allowed}
    demands = [(Demand.of(name, replica_spec, kind), replica_spec) for name, replica_spec in deployments(spec)]
    for demand, replica_spec in demands:
        fitting = [t for t in by_size if demand.fits(t)]
        if not fitting:
            raise StageDoesNotFit(
                f"{demand.deployment} asks {float(demand.accelerators):g} {KINDS[kind].unit}s, {demand.cpus} CPUs and "
                f"{replica_spec.memory} per replica, more than one worker of any allowed instance type "
                f"({', '.join(spec.accelerator.allowed_types)}) offers"
            )
        minimum[fitting[0].instance.name] += [demand] * replica_spec.min_replicas
        for worker in fitting:
            maximum[worker.instance.name] += [demand] * replica_spec.max_replicas
    groups = tuple(
        GroupBounds(w, _nodes_needed(minimum[w.instance.name], w), _nodes_needed(maximum[w.instance.name], w))
        for w in allowed
    )
    return Plan(
        groups=groups,
        min_accelerators=sum((d.accelerators * s.min_replicas for d, s in demands), Decimal(0)),
        max_accelerators=sum((d.accelerators * s.max_replicas for d, s in demands), Decimal(0)),
    )
