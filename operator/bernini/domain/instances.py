"""The instance types a BerniniDeployment may run on, by accelerator kind: the one table that the spec's enum,
the packing, the docs and the local fake nodes read."""

from dataclasses import dataclass
from typing import Literal

AcceleratorKind = Literal["neuron", "nvidia", "cpu"]


@dataclass(frozen=True)
class AcceleratorKindFacts:
    """How Kubernetes, Ray and the artifacts name one accelerator kind."""

    unit: str  # what one unit of spec.stages.*.accelerators is
    resource: str | None  # the device plugin's extended resource
    taint_key: str | None  # the taint its nodes carry (EKS managed node groups and the Karpenter examples)
    target: str  # the artifacts' compilation target
    fractional: bool  # whether a replica may ask a fraction of one unit


KINDS: dict[str, AcceleratorKindFacts] = {
    "neuron": AcceleratorKindFacts("NeuronCore", "aws.amazon.com/neuroncore", "aws.amazon.com/neuron", "inf2", False),
    "nvidia": AcceleratorKindFacts("GPU", "nvidia.com/gpu", "nvidia.com/gpu", "cuda", True),
    "cpu": AcceleratorKindFacts("none", None, None, "cpu", False),
}

# The artifacts' compilation targets, one per kind: what `bernini compile`, the manifest and spec.model take.
TARGETS = tuple(facts.target for facts in KINDS.values())


@dataclass(frozen=True)
class InstanceType:
    name: str
    kind: AcceleratorKind
    accelerators: int  # NeuronCores (neuron) or GPUs (nvidia); 0 for cpu
    accelerator_memory_gib: int  # Neuron device HBM or GPU memory, all devices together
    vcpus: int
    memory_gib: int
    neuron_devices: int = 0
    arch: str = "x86_64"

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def worker_cpus(self) -> int:
        # One vCPU stays for kubelet, the device plugin and daemonsets; Ray wants whole CPUs.
        return self.vcpus - 1

    @property
    def worker_memory_bytes(self) -> int:
        return self.memory_gib * 2**30 * 8 // 10


def _neuron(name: str, devices: int, vcpus: int, memory_gib: int, hbm_per_device: int) -> InstanceType:
    return InstanceType(name, "neuron", devices * 2, devices * hbm_per_device, vcpus, memory_gib, neuron_devices=devices)


def _nvidia(name: str, gpus: int, gpu_memory_gib: int, vcpus: int, memory_gib: int) -> InstanceType:
    return InstanceType(name, "nvidia", gpus, gpus * gpu_memory_gib, vcpus, memory_gib)


def _cpu(name: str, vcpus: int, memory_gib: int) -> InstanceType:
    return InstanceType(name, "cpu", 0, 0, vcpus, memory_gib)


CATALOGUE: dict[str, InstanceType] = {
    t.name: t
    for t in (
        _neuron("inf2.xlarge", 1, 4, 16, 32),
        _neuron("inf2.8xlarge", 1, 32, 128, 32),
        _neuron("inf2.24xlarge", 6, 96, 384, 32),
        _neuron("inf2.48xlarge", 12, 192, 768, 32),
        _neuron("trn1.2xlarge", 1, 8, 32, 32),
        _neuron("trn1.32xlarge", 16, 128, 512, 32),
        _nvidia("g5.xlarge", 1, 24, 4, 16),  # A10G
        _nvidia("g5.2xlarge", 1, 24, 8, 32),
        _nvidia("g5.12xlarge", 4, 24, 48, 192),
        _nvidia("g5.48xlarge", 8, 24, 192, 768),
        _nvidia("g6.xlarge", 1, 24, 4, 16),  # L4
        _nvidia("g6.12xlarge", 4, 24, 48, 192),
        _nvidia("g6e.xlarge", 1, 48, 4, 32),  # L40S
        _nvidia("g6e.12xlarge", 4, 48, 48, 384),
        _cpu("m6i.xlarge", 4, 16),
        _cpu("m6i.2xlarge", 8, 32),
        _cpu("m6i.4xlarge", 16, 64),
        _cpu("c6i.4xlarge", 16, 32),
    )
}

# Unset spec.accelerator.instanceTypes: the kind's smallest type.
DEFAULT_INSTANCE_TYPE = {"neuron": "inf2.xlarge", "nvidia": "g5.xlarge", "cpu": "m6i.xlarge"}


def of_kind(kind: str) -> list[str]:
    return [name for name, instance in CATALOGUE.items() if instance.kind == kind]


# Families the Ray head must stay off: their nodes are for workers.
ACCELERATED_FAMILIES = sorted({t.family for t in CATALOGUE.values() if t.kind != "cpu"})
