"""How stage replicas pack onto worker nodes: the arithmetic, in the units of the instance catalogue.

Packing rule (one Ray worker pod per node, taking all of the node's accelerators: NeuronCores or GPUs):
- A worker pod on instance type T offers T's accelerators, its vCPUs less one (kubelet and
  daemonsets), and 80% of its memory, unless spec.workers (spec.cpuWorkers) sets smaller CPUs or memory;
  of that memory Ray's object store keeps 30% and replicas get the rest. A replica asks for
  (accelerators, cpus, memory), a GPU fraction included; the ingress is packed like a stage with no
  accelerators. Deployments that load graphs go to the accelerated groups, the others to the CPU group.
- A stage fits T when one replica fits an empty worker pod of T.
- Minimum: every deployment's minReplicas go to its home type (the smallest allowed type it fits),
  packed first-fit decreasing; that node count is the group's minReplicas.
- Maximum: each group's maxReplicas is the node count that holds maxReplicas of every deployment
  that fits T, so Ray's autoscaler may pick any allowed type without running out of nodes.

bernini.render.capacity applies it to a spec and names what does not fit.
"""

from dataclasses import dataclass
from decimal import Decimal

from bernini.domain.instances import InstanceType


def object_store_bytes(pod_memory_bytes: int) -> int:
    """Ray's object store share of a pod's memory (Ray's own default, 30%), held in /dev/shm."""
    return pod_memory_bytes * 3 // 10


@dataclass(frozen=True)
class WorkerShape:
    """What one worker pod on an instance type offers: all its accelerators, CPUs and memory."""

    instance: InstanceType
    cpus: int
    memory_bytes: int

    @property
    def replica_memory_bytes(self) -> int:
        """What Ray offers replicas as its memory resource: the pod's memory less the object store (set
        explicitly in rayStartParams, so the packing and Ray agree)."""
        return self.memory_bytes - object_store_bytes(self.memory_bytes)

    @property
    def accelerators(self) -> int:
        return self.instance.accelerators

    @property
    def fits_instance(self) -> bool:
        """Whether the node has room for this pod beside kubelet and the daemonsets."""
        return self.cpus <= self.instance.worker_cpus and self.memory_bytes <= self.instance.worker_memory_bytes


@dataclass(frozen=True)
class Demand:
    """What one replica of a deployment asks of a worker pod."""

    deployment: str
    accelerators: Decimal
    cpus: Decimal
    memory_bytes: int

    def fits(self, worker: WorkerShape) -> bool:
        return (
            self.accelerators <= worker.accelerators
            and self.cpus <= worker.cpus
            and self.memory_bytes <= worker.replica_memory_bytes
        )


@dataclass(frozen=True)
class Replicas:
    """A deployment's replica bounds, each replica asking `demand`."""

    demand: Demand
    minimum: int
    maximum: int


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


class NoWorkerFits(ValueError):
    """One replica of `demand` is larger than an empty worker pod of every allowed type."""

    def __init__(self, demand: Demand):
        super().__init__(f"{demand.deployment} fits no worker pod")
        self.demand = demand


def pack(workers: list[WorkerShape], deployments: list[Replicas]) -> Plan:
    """One worker group per allowed shape, in the order given; raises NoWorkerFits."""
    by_size = sorted(workers, key=lambda w: (w.accelerators, w.instance.vcpus))
    minimum: dict[str, list[Demand]] = {w.instance.name: [] for w in workers}
    maximum: dict[str, list[Demand]] = {w.instance.name: [] for w in workers}
    for replicas in deployments:
        fitting = [w for w in by_size if replicas.demand.fits(w)]
        if not fitting:
            raise NoWorkerFits(replicas.demand)
        minimum[fitting[0].instance.name] += [replicas.demand] * replicas.minimum
        for worker in fitting:
            maximum[worker.instance.name] += [replicas.demand] * replicas.maximum
    groups = tuple(
        GroupBounds(w, _nodes_needed(minimum[w.instance.name], w), _nodes_needed(maximum[w.instance.name], w))
        for w in workers
    )
    return Plan(
        groups=groups,
        min_accelerators=sum((r.demand.accelerators * r.minimum for r in deployments), Decimal(0)),
        max_accelerators=sum((r.demand.accelerators * r.maximum for r in deployments), Decimal(0)),
    )


def _nodes_needed(replicas: list[Demand], worker: WorkerShape) -> int:
    """First-fit decreasing over three dimensions; returns the node count."""
    free: list[list] = []  # per node: [accelerators, cpus, memory]
    ordered = sorted(replicas, key=lambda d: (d.accelerators, d.cpus, d.memory_bytes), reverse=True)
    for demand in ordered:
        for node in free:
            if demand.accelerators <= node[0] and demand.cpus <= node[1] and demand.memory_bytes <= node[2]:
                break
        else:
            node = [Decimal(worker.accelerators), worker.cpus, worker.replica_memory_bytes]
            free.append(node)
        node[0] -= demand.accelerators
        node[1] -= demand.cpus
        node[2] -= demand.memory_bytes
    return len(free)
