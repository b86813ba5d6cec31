"""A spec's capacity plan: its worker shapes and replicas in bernini.domain.capacity's packing, and what does
not fit named in the spec's terms (condition Rendered=False with the error's reason: the user must fix it)."""

from decimal import Decimal

from bernini.api import reasons
from bernini.api.spec import BerniniDeploymentSpec, ReplicaSpec
from bernini.domain.capacity import Demand, NoWorkerFits, Plan, Replicas, WorkerShape, pack
from bernini.domain.instances import CATALOGUE, KINDS, InstanceType
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
    return [*spec.stages.items(), ("ingress", spec.ingress)]


def _worker_shape(instance: InstanceType, spec: BerniniDeploymentSpec) -> WorkerShape:
    """The worker pod spec.workers asks for on `instance`; raises WorkerDoesNotFit."""
    cpus = spec.workers.cpus or instance.worker_cpus
    memory = to_bytes(spec.workers.memory) if spec.workers.memory else instance.worker_memory_bytes
    shape = WorkerShape(instance, cpus, memory)
    if not shape.fits_instance:
        raise WorkerDoesNotFit(
            f"spec.workers asks {cpus} CPUs and {memory // 2**20}Mi per worker pod; {instance.name} offers at "
            f"most {instance.worker_cpus} CPUs and {instance.worker_memory_bytes // 2**20}Mi"
        )
    return shape


def _replicas(deployment: str, spec: ReplicaSpec, kind: str) -> Replicas:
    demand = Demand(deployment, Decimal(str(spec.amount(deployment, kind))), Decimal(str(spec.cpus)),
                    to_bytes(spec.memory))
    return Replicas(demand, spec.min_replicas, spec.max_replicas)


def plan(spec: BerniniDeploymentSpec) -> Plan:
    """Worker-group bounds and accelerator totals for spec; raises a DoesNotFit."""
    kind = spec.accelerator.kind
    workers = [_worker_shape(CATALOGUE[name], spec) for name in spec.accelerator.allowed_types]
    replica_specs = dict(deployments(spec))
    try:
        return pack(workers, [_replicas(name, replica_spec, kind) for name, replica_spec in replica_specs.items()])
    except NoWorkerFits as error:
        demand = error.demand
        raise StageDoesNotFit(
            f"{demand.deployment} asks {float(demand.accelerators):g} {KINDS[kind].unit}s, {demand.cpus} CPUs and "
            f"{replica_specs[demand.deployment].memory} per replica, more than one worker of any allowed instance "
            f"type ({', '.join(spec.accelerator.allowed_types)}) offers"
        ) from None
