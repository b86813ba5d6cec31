"""The fake node fleet KWOK keeps alive: inf2 nodes with Neuron capacity and the Neuron taint, plus CPU nodes."""

from dataclasses import dataclass

from bernini.instances import INF2, InstanceType

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NEURON_TAINT_KEY = "aws.amazon.com/neuron"


@dataclass(frozen=True)
class NodeShape:
    instance_type: str
    cpu: str
    memory: str
    neuron_cores: int = 0
    neuron_devices: int = 0

    @property
    def is_inf2(self) -> bool:
        return self.neuron_cores > 0

    @classmethod
    def of(cls, instance: InstanceType) -> "NodeShape":
        return cls(instance.name, cpu=str(instance.vcpus), memory=f"{instance.memory_gib}Gi",
                   neuron_cores=instance.neuron_cores, neuron_devices=instance.neuron_devices)


INF2_XLARGE = NodeShape.of(INF2["inf2.xlarge"])
INF2_24XLARGE = NodeShape.of(INF2["inf2.24xlarge"])
M5_2XLARGE = NodeShape("m5.2xlarge", cpu="8", memory="32Gi")

DEFAULT_FLEET: tuple[tuple[str, NodeShape], ...] = (
    ("inf2-xlarge-a", INF2_XLARGE),
    ("inf2-xlarge-b", INF2_XLARGE),
    ("inf2-24xlarge-a", INF2_24XLARGE),
    ("cpu-m5-a", M5_2XLARGE),
    ("cpu-m5-b", M5_2XLARGE),
)


def node_manifest(name: str, shape: NodeShape, max_pods: int = 250) -> dict:
    """A Node as kubelet would register it; KWOK keeps it Ready and its capacity as given."""
    capacity = {"cpu": shape.cpu, "memory": shape.memory, "pods": str(max_pods)}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": shape.instance_type,
        "type": "kwok",
    }
    taints = []
    if shape.is_inf2:
        capacity["aws.amazon.com/neuroncore"] = str(shape.neuron_cores)
        capacity["aws.amazon.com/neuron"] = str(shape.neuron_devices)
        labels["karpenter.k8s.aws/instance-family"] = "inf2"
        taints.append({"key": NEURON_TAINT_KEY, "value": "true", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
