"""Smoke tests of the local control plane itself: scheduler + KWOK placement, KubeRay, owner GC."""

import pytest
from kubernetes import client

from localdev.waiting import wait_for

pytestmark = pytest.mark.cluster

NEURON_TOLERATION = {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}


def _neuron_pod(name: str, tolerate: bool) -> dict:
    resources = {"aws.amazon.com/neuroncore": "2", "cpu": "100m", "memory": "128Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "main", "image": "example.invalid/neuron:1", "resources": {"requests": resources, "limits": resources}}],
            "tolerations": [NEURON_TOLERATION] if tolerate else [],
        },
    }


def test_neuron_pod_with_toleration_runs_on_an_inf2_node(core, namespace):
    core.create_namespaced_pod(namespace, _neuron_pod("tolerates", tolerate=True))
    pod = wait_for(
        lambda: (p := core.read_namespaced_pod("tolerates", namespace)).status.phase == "Running" and p,
        "the pod to be Running",
    )
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["karpenter.k8s.aws/instance-family"] == "inf2"
    assert int(node.status.allocatable["aws.amazon.com/neuroncore"]) >= 2


def test_neuron_pod_without_toleration_stays_unschedulable(core, namespace):
    core.create_namespaced_pod(namespace, _neuron_pod("intolerant", tolerate=False))

    def unschedulable():
        pod = core.read_namespaced_pod("intolerant", namespace)
        conditions = {c.type: c for c in pod.status.conditions or []}
        scheduled = conditions.get("PodScheduled")
        return scheduled and scheduled.status == "False" and scheduled.reason == "Unschedulable" and pod

    pod = wait_for(unschedulable, "PodScheduled=False/Unschedulable")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def _minimal_rayservice(name: str) -> dict:
    worker_resources = {"aws.amazon.com/neuroncore": "2", "cpu": "1", "memory": "2Gi"}
    head_resources = {"cpu": "1", "memory": "2Gi"}
    container = {"name": "ray", "image": "rayproject/ray:2.60.0"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": "applications: []\n",
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {
                        "spec": {
                            "containers": [{**container, "resources": {"requests": head_resources, "limits": head_resources}}],
                            "affinity": {
                                "nodeAffinity": {
                                    "requiredDuringSchedulingIgnoredDuringExecution": {
                                        "nodeSelectorTerms": [
                                            {"matchExpressions": [{"key": "karpenter.k8s.aws/instance-family", "operator": "NotIn", "values": ["inf2"]}]}
                                        ]
                                    }
                                }
                            },
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "inf2",
                        "replicas": 2,
                        "minReplicas": 2,
                        "maxReplicas": 2,
                        "rayStartParams": {"resources": "'{\"neuron_cores\": 2}'"},
                        "template": {
                            "spec": {
                                "containers": [{**container, "resources": {"requests": worker_resources, "limits": worker_resources}}],
                                "tolerations": [NEURON_TOLERATION],
                                "nodeSelector": {"karpenter.k8s.aws/instance-family": "inf2"},
                            }
                        },
                    }
                ],
            },
        },
    }


def test_kuberay_turns_a_rayservice_into_a_raycluster_with_pods_on_the_right_nodes(core, custom, namespace):
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", _minimal_rayservice("smoke"))
    clusters = wait_for(
        lambda: custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")["items"],
        "KubeRay to create a RayCluster",
    )
    assert clusters[0]["metadata"]["ownerReferences"][0]["kind"] == "RayService"

    def running_pods():
        pods = core.list_namespaced_pod(namespace, label_selector="ray.io/is-ray-node=yes").items
        running = [p for p in pods if p.status.phase == "Running"]
        return len(running) == 3 and running

    pods = wait_for(running_pods, "one head and two worker pods Running", timeout=90)
    for pod in pods:
        node = core.read_node(pod.spec.node_name)
        family = node.metadata.labels.get("karpenter.k8s.aws/instance-family")
        if pod.metadata.labels["ray.io/node-type"] == "head":
            assert family == "m6i", f"head landed on {node.metadata.name}"
        else:
            assert family == "inf2", f"worker landed on {node.metadata.name}"


def test_deleting_an_owner_garbage_collects_its_child(core, namespace):
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, controller=True
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[reference]))
    )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_for(
        lambda: not core.list_namespaced_config_map(namespace, field_selector="metadata.name=child").items,
        "the garbage collector to delete the child",
    )
