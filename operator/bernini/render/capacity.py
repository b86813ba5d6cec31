"""A spec's capacity plan: its worker shapes and replicas in bernini.domain.capacity's packing, and what does
not fit named in the spec's terms (condition Rendered=False with the error's reason: the user must fix it)."""

from decimal import Decimal

from bernini.api import reasons
from bernini.api.spec import BerniniDeploymentSpec, CpuWorkers, ReplicaSpec, WorkerPods
from bernini.domain.capacity import Demand, NoWorkerFits, Plan, Replicas, WorkerShape, pack
from bernini.domain.instances import CATALOGUE, KINDS, InstanceType
from bernini.domain.pipeline import GRAPHS_OF_DEPLOYMENT
from bernini.domain.quantity import to_bytes


class DoesNotFit(ValueError):
    """The spec asks for more than the allowed instance types hold; `reason` names the condition reason."""

    reason = reasons.DOES_NOT_FIT


class StageDoesNotFit(DoesNotFit):
    """A deployment's replica is larger than a worker pod of every allowed instance type."""

    reason = reasons.STAGE_DOES_NOT_FIT


class WorkerDoesNotFit(DoesNotFit):
    """spec.workers asks for a worker pod larger than an allowed instance type offers."""

    reason = reasons.WORKER_DOES_NOT_FIT


def deployments(spec: BerniniDeploymentSpec) -> list[tuple[str, ReplicaSpec]]:
    return spec.serve_deployments()


def on_cpu_group(spec: BerniniDeploymentSpec, deployment: str, replica_spec: ReplicaSpec) -> bool:
    """Whether a deployment runs in the CPU worker group: it loads no compiled graph and asks no accelerator.
    Kind cpu has no separate group."""
    return (spec.accelerator.kind != "cpu" and deployment not in GRAPHS_OF_DEPLOYMENT
            and not replica_spec.amount(deployment, spec.accelerator.kind))


def _worker_shape(instance: InstanceType, workers: WorkerPods | CpuWorkers, field: str) -> WorkerShape:
    """The worker pod `workers` (spec.<field>) asks for on `instance`; raises WorkerDoesNotFit."""
    cpus = workers.cpus or instance.worker_cpus
    memory = to_bytes(workers.memory) if workers.memory else instance.worker_memory_bytes
    shape = WorkerShape(instance, cpus, memory)
    if not shape.fits_instance:
        raise WorkerDoesNotFit(
            f"spec.{field} asks {cpus} CPUs and {memory // 2**20}Mi per worker pod; {instance.name} offers at "
            f"most {instance.worker_cpus} CPUs and {instance.worker_memory_bytes // 2**20}Mi"
        )
    return shape


def _replicas(deployment: str, spec: ReplicaSpec, kind: str, one_each: bool) -> Replicas:
    demand = Demand(deployment, Decimal(str(spec.amount(deployment, kind))), Decimal(str(spec.cpus)),
                    to_bytes(spec.memory))
    return Replicas(demand, min(spec.min_replicas, 1) if one_each else spec.min_replicas, spec.max_replicas)


def plan(spec: BerniniDeploymentSpec, one_replica_each: bool = False) -> Plan:
    """Worker-group bounds and accelerator totals for spec: the accelerator groups, then the CPU group;
    raises a DoesNotFit. one_replica_each: the minimum as if every deployment with a minimum had just one
    replica (the smallest cluster that serves at all)."""
    kind = spec.accelerator.kind
    replica_specs = dict(deployments(spec))
    on_cpu = {name for name, replica_spec in replica_specs.items() if on_cpu_group(spec, name, replica_spec)}
    accelerated = _pack(spec, [CATALOGUE[name] for name in spec.accelerator.allowed_types], spec.workers, "workers",
                        {name: replica_specs[name] for name in replica_specs if name not in on_cpu}, one_replica_each)
    if not on_cpu:
        return accelerated
    cpu = _pack(spec, [CATALOGUE[spec.cpu_workers.instance_type]], spec.cpu_workers, "cpuWorkers",
                {name: replica_specs[name] for name in replica_specs if name in on_cpu}, one_replica_each)
    return Plan(groups=accelerated.groups + cpu.groups, min_accelerators=accelerated.min_accelerators,
                max_accelerators=accelerated.max_accelerators)


def _pack(spec: BerniniDeploymentSpec, instances: list[InstanceType], pods: WorkerPods | CpuWorkers, field: str,
          replica_specs: dict[str, ReplicaSpec], one_each: bool) -> Plan:
    kind = spec.accelerator.kind
    workers = [_worker_shape(instance, pods, field) for instance in instances]
    try:
        return pack(workers, [_replicas(name, replica_spec, kind, one_each)
                              for name, replica_spec in replica_specs.items()])
    except NoWorkerFits as error:
        demand = error.demand
        raise StageDoesNotFit(
            f"{demand.deployment} asks {float(demand.accelerators):g} {KINDS[kind].unit}s, {float(demand.cpus):g} CPUs and "
            f"{replica_specs[demand.deployment].memory} per replica, more than one worker pod of any of its "
            f"instance types ({', '.join(instance.name for instance in instances)}) offers"
        ) from None
