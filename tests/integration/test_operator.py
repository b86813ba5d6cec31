"""The operator against the real apiserver, KubeRay, kube-scheduler, KWOK and an S3 server."""

import pytest
import yaml

from bernini.api import GROUP, PLURAL, VERSION
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


def _create(custom, namespace, body):
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def _get(custom, namespace, name="bernini"):
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def _condition(body, condition_type):
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == condition_type:
            return condition
    return {}


def _rayservice(custom, namespace, name="bernini"):
    items = custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", field_selector=f"metadata.name={name}")["items"]
    return items[0] if items else None


def test_example_becomes_a_rayservice_with_neuron_workers_on_inf2(operator, custom, core, namespace, example_deployment):
    body = example_deployment()
    body["metadata"]["labels"] = {"argocd.argoproj.io/instance": "models", "team": "ml"}
    created = _create(custom, namespace, body)

    rayservice = wait_for(lambda: _rayservice(custom, namespace), "the operator to create the RayService")
    owner = rayservice["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("BerniniDeployment", created["metadata"]["uid"], True)
    assert "argocd.argoproj.io/instance" not in rayservice["metadata"].get("labels", {})
    assert rayservice["metadata"]["managedFields"][0]["manager"] == "bernini-operator"
    assert rayservice["metadata"]["managedFields"][0]["operation"] == "Apply"

    def worker_pods_running():
        pods = core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=worker").items
        running = [p for p in pods if p.status.phase == "Running"]
        return len(running) >= 2 and running

    pods = wait_for(worker_pods_running, "two inf2 worker pods Running", timeout=90)
    for pod in pods:
        node = core.read_node(pod.spec.node_name)
        assert node.metadata.labels["node.kubernetes.io/instance-type"] == "inf2.xlarge"
        worker = pod.spec.containers[0]
        assert worker.resources.requests["aws.amazon.com/neuroncore"] == "2"
        assert worker.resources.limits["aws.amazon.com/neuroncore"] == "2"
        puller = next(c for c in pod.spec.init_containers if c.name == "pull-artifacts")
        assert puller.command[:5] == ["bernini", "artifacts", "pull", body["spec"]["model"]["artifactsUri"], "/mnt/bernini/artifacts"]
        assert pod.spec.service_account_name == "bernini-serving"
    head = core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=head").items[0]
    assert "karpenter.k8s.aws/instance-family" not in core.read_node(head.spec.node_name).metadata.labels

    def verified_and_rendered():
        current = _get(custom, namespace)
        return (
            _condition(current, "ArtifactsVerified").get("status") == "True"
            and _condition(current, "Rendered").get("status") == "True"
            and current
        )

    current = wait_for(verified_and_rendered, "ArtifactsVerified=True and Rendered=True")
    status = current["status"]
    assert status["observedGeneration"] == current["metadata"]["generation"]
    assert status["rayServiceName"] == "bernini"
    assert status["serveEndpoint"] == f"http://bernini-serve-svc.{namespace}.svc.cluster.local:8000"
    assert status["capacity"]["minWorkers"] == 2
    assert status["capacity"]["minNeuronCores"] == 3
    # Without a real Ray head KubeRay cannot reach a dashboard, so the RayService is not Ready: neither are we.
    assert _condition(current, "Ready")["status"] == "False"
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name=bernini,involvedObject.kind=BerniniDeployment").items
    assert {"Verified", "Applied"} <= {event.reason for event in events}
