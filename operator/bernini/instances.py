"""The inf2 instance types: the one table that the spec's enum, the packing and the local nodes read."""

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    neuron_devices: int
    neuron_cores: int
    vcpus: int
    memory_gib: int

    @property
    def worker_cpus(self) -> int:
        # One vCPU stays for kubelet, the Neuron device plugin and daemonsets; Ray wants whole CPUs.
        return self.vcpus - 1

    @property
    def worker_memory_bytes(self) -> int:
        return self.memory_gib * 2**30 * 8 // 10


INF2 = {
    t.name: t
    for t in (
        InstanceType("inf2.xlarge", neuron_devices=1, neuron_cores=2, vcpus=4, memory_gib=16),
        InstanceType("inf2.8xlarge", neuron_devices=1, neuron_cores=2, vcpus=32, memory_gib=128),
        InstanceType("inf2.24xlarge", neuron_devices=6, neuron_cores=12, vcpus=96, memory_gib=384),
        InstanceType("inf2.48xlarge", neuron_devices=12, neuron_cores=24, vcpus=192, memory_gib=768),
    )
}
