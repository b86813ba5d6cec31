"""The fake node fleet KWOK keeps alive: inf2 and g5 nodes with their accelerator capacity and taints, plus CPU
nodes. The shapes come from the product's one instance catalogue."""

from dataclasses import dataclass

from bernini.domain.instances import CATALOGUE, KINDS, InstanceType

KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class NodeShape:
    instance: InstanceType

    @property
    def instance_type(self) -> str:
        return self.instance.name

    @property
    def taint_key(self) -> str | None:
        return KINDS[self.instance.kind].taint_key

    def extended_resources(self) -> dict[str, str]:
        """What the kind's device plugin advertises on such a node."""
        resource = KINDS[self.instance.kind].resource
        if resource is None:
            return {}
        advertised = {resource: str(self.instance.accelerators)}
        if self.instance.neuron_devices:  # the Neuron plugin also counts whole devices
            advertised["aws.amazon.com/neuron"] = str(self.instance.neuron_devices)
        return advertised

    def labels(self) -> dict[str, str]:
        return {"node.kubernetes.io/instance-type": self.instance.name,
                "karpenter.k8s.aws/instance-family": self.instance.family}

    def taints(self) -> list[dict]:
        return [{"key": self.taint_key, "value": "true", "effect": "NoSchedule"}] if self.taint_key else []


INF2_XLARGE = NodeShape(CATALOGUE["inf2.xlarge"])
INF2_24XLARGE = NodeShape(CATALOGUE["inf2.24xlarge"])
G5_XLARGE = NodeShape(CATALOGUE["g5.xlarge"])
G5_12XLARGE = NodeShape(CATALOGUE["g5.12xlarge"])
M6I_XLARGE = NodeShape(CATALOGUE["m6i.xlarge"])
M6I_2XLARGE = NodeShape(CATALOGUE["m6i.2xlarge"])

DEFAULT_FLEET: tuple[tuple[str, NodeShape], ...] = (
    ("inf2-xlarge-a", INF2_XLARGE),
    ("inf2-xlarge-b", INF2_XLARGE),
    ("inf2-24xlarge-a", INF2_24XLARGE),
    ("g5-xlarge-a", G5_XLARGE),
    ("g5-12xlarge-a", G5_12XLARGE),
    ("cpu-m6i-a", M6I_2XLARGE),
    ("cpu-m6i-b", M6I_2XLARGE),
    ("cpu-m6i-xlarge-a", M6I_XLARGE),  # the CPU worker group's default type
)


def node_manifest(name: str, shape: NodeShape, max_pods: int = 250) -> dict:
    """A Node as kubelet would register it; KWOK keeps it Ready and its capacity as given."""
    capacity = {"cpu": str(shape.instance.vcpus), "memory": f"{shape.instance.memory_gib}Gi", "pods": str(max_pods),
                **shape.extended_resources()}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **shape.labels(),
        "type": "kwok",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"taints": shape.taints()},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
