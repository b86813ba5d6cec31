"""The operator against the real apiserver, KubeRay, kube-scheduler, KWOK and an S3 server."""

import copy
import json
import os
import subprocess
import sys
import time
import urllib.parse

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bernini.api import GROUP, PLURAL, VERSION
from tests.conftest import apply_crd
from tests.integration.helpers import _condition, _create, _events, _get, _rayservice
from tests.operator_process import OperatorProcess
from tests.realnodes.helpers import node_cache_objects
from tests.tcp_gate import GatedForwarder
from localdev.waiting import wait_for

pytestmark = pytest.mark.cluster



def test_example_becomes_a_rayservice_with_neuron_workers_on_inf2(operator, custom, core, namespace, example_deployment):
    # The namespace enforces the restricted Pod Security level: every Ray pod (KubeRay's autoscaler sidecar
    # included) is admitted under it, or none would run.
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    body = example_deployment()
    body["metadata"]["labels"] = {"argocd.argoproj.io/instance": "models", "team": "ml"}
    created = _create(custom, namespace, body)

    rayservice = wait_for(lambda: _rayservice(custom, namespace), "the operator to create the RayService")
    owner = rayservice["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("BerniniDeployment", created["metadata"]["uid"], True)
    assert "argocd.argoproj.io/instance" not in rayservice["metadata"].get("labels", {})
    # Created by a POST, so it never lands on a RayService of that name; the first apply takes its fields over.
    assert rayservice["metadata"]["managedFields"][0]["manager"] == "bernini-operator"
    assert rayservice["metadata"]["managedFields"][0]["operation"] == "Update"

    def worker_pods_running():
        pods = core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=worker").items
        running = [p for p in pods if p.status.phase == "Running"]
        return len(running) >= 2 and running

    pods = wait_for(worker_pods_running, "the inf2 and the CPU group's worker pods Running", timeout=90)
    by_group = {pod.metadata.labels["ray.io/group"]: pod for pod in pods}
    assert set(by_group) == {"inf2-xlarge", "m6i-xlarge"}
    cpu_worker = by_group.pop("m6i-xlarge")
    assert core.read_node(cpu_worker.spec.node_name).metadata.labels["node.kubernetes.io/instance-type"] == "m6i.xlarge"
    assert "pull-artifacts" not in {c.name for c in cpu_worker.spec.init_containers or []}  # KubeRay adds its own
    assert cpu_worker.spec.service_account_name == "default"
    for pod in by_group.values():
        node = core.read_node(pod.spec.node_name)
        assert node.metadata.labels["node.kubernetes.io/instance-type"] == "inf2.xlarge"
        worker = pod.spec.containers[0]
        assert worker.resources.requests["aws.amazon.com/neuroncore"] == "2"
        assert worker.resources.limits["aws.amazon.com/neuroncore"] == "2"
        puller = next(c for c in pod.spec.init_containers if c.name == "pull-artifacts")
        assert puller.command[:5] == ["bernini", "artifacts", "pull", body["spec"]["model"]["artifactsUri"], "/mnt/bernini/artifacts"]
        assert pod.spec.service_account_name == "bernini-serving"
        assert pod.spec.automount_service_account_token is False  # parses uploads; needs no API token
    head = core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=head").items[0]
    assert head.spec.automount_service_account_token is True  # its autoscaler sidecar scales the workers
    head_family = core.read_node(head.spec.node_name).metadata.labels["karpenter.k8s.aws/instance-family"]
    assert head_family == "m6i"  # the only family of the fake fleet that no accelerated worker uses

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
    assert status["capacity"]["minWorkers"] == 2  # one inf2.xlarge for the fused replica, one CPU group node
    assert status["capacity"]["minAccelerators"] == 1
    # Without a real Ray head KubeRay cannot reach a dashboard, so the RayService is not Ready: neither are we.
    assert _condition(current, "Ready")["status"] == "False"
    # First states of a healthy new object are no news: no Events (a burst of 5,000 would post ~28,000).
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=bernini,involvedObject.kind=BerniniDeployment").items
    assert events == []


OTHER_KINDS = {
    # GPU fractions: four replicas share the one GPU-hungry node's GPUs (the neuron kind is the example above).
    "nvidia": ({"kind": "nvidia", "instanceTypes": ["g5.12xlarge"]},
               {"encoder": {"accelerators": 0.25}, "diffusion": {"accelerators": 0.5}, "decoder": {"accelerators": 0.25}},
               {"nvidia.com/gpu": "4"}, "nvidia.com/gpu"),
    "cpu": ({"kind": "cpu", "instanceTypes": ["m6i.2xlarge"]}, {}, {}, None),
}


@pytest.mark.parametrize("kind", list(OTHER_KINDS))
def test_each_accelerator_kind_runs_its_workers_on_its_own_nodes(operator, custom, core, namespace, example_deployment, kind):
    from bernini.domain.instances import KINDS

    accelerator, stages, extended, taint = OTHER_KINDS[kind]
    body = example_deployment(target=KINDS[kind].target)
    body["spec"].update(accelerator=accelerator, stages=stages, layout="staged")
    _create(custom, namespace, body)
    group = accelerator["instanceTypes"][0].replace(".", "-")

    def worker_running():
        pods = core.list_namespaced_pod(namespace, label_selector=f"ray.io/group={group}").items
        return [p for p in pods if p.status.phase == "Running"]

    [pod] = wait_for(worker_running, f"the {kind} worker pod Running", timeout=90)
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == accelerator["instanceTypes"][0]
    limits = pod.spec.containers[0].resources.limits
    assert {key: value for key, value in limits.items() if key not in ("cpu", "memory")} == extended
    assert [t.key for t in pod.spec.tolerations or [] if t.effect == "NoSchedule" and "node.kubernetes" not in t.key] == \
        ([taint] if taint else [])
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "ArtifactsVerified").get("status") == "True" and c,
                       f"the {KINDS[kind].target} artifacts verified")
    # Kind nvidia adds the CPU group's node; kind cpu has none (its workers are general-purpose already).
    assert current["status"]["capacity"]["minWorkers"] == (2 if kind == "nvidia" else 1)
    assert current["status"]["capacity"]["minAccelerators"] == (1.0 if kind == "nvidia" else 0)
    diffusion = _deployment(_rayservice(custom, namespace), "Diffusion")["ray_actor_options"]
    assert diffusion.get("num_gpus") == (0.5 if kind == "nvidia" else None)
    assert diffusion.get("resources") == ({"bernini_accelerated_worker": 0.001} if kind == "nvidia" else None)


def _patch(custom, namespace, patch, name="bernini"):
    return custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)


def _rendered_generation(custom, namespace, generation):
    def probe():
        current = _get(custom, namespace)
        condition = _condition(current, "Rendered")
        return condition.get("observedGeneration") == generation and condition.get("status") == "True" and current
    return probe


def _serve_config(rayservice):
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def _deployment(rayservice, name):
    return next(d for d in _serve_config(rayservice)["applications"][0]["deployments"] if d["name"] == name)


def _rayclusters(custom, namespace):
    return custom.list_namespaced_custom_object("ray.io", "v1", namespace, "rayclusters")["items"]


def test_updates_change_the_rayservice_in_place(operator, custom, namespace, example_deployment):
    """Bounds and artifacts changes land in the same RayService; KubeRay then decides in-place vs NewCluster.

    KubeRay only rolls a new RayCluster after it has read Serve status from a Ray dashboard, which fake
    KWOK pods cannot serve; the rollout itself is therefore not asserted here.
    """
    _create(custom, namespace, example_deployment())
    first = wait_for(lambda: _rayservice(custom, namespace), "the RayService")

    _patch(custom, namespace, {"spec": {"stages": {"fused": {"maxReplicas": 7}}}})
    wait_for(lambda: _deployment(_rayservice(custom, namespace), "FusedStages")["autoscaling_config"]["max_replicas"] == 7,
             "serveConfigV2 to carry the new bound")
    wait_for(_rendered_generation(custom, namespace, 2), "Rendered for generation 2")

    v2 = example_deployment(version="2.0.0")
    _patch(custom, namespace, {"spec": {"model": v2["spec"]["model"]}})
    current = wait_for(_rendered_generation(custom, namespace, 3), "Rendered for generation 3")
    # modelVersion names what serves traffic; no RayCluster serves on fake pods (tests/realnodes shows the switch).
    assert current["status"].get("modelVersion", "") == ""
    rayservice = _rayservice(custom, namespace)
    assert rayservice["metadata"]["uid"] == first["metadata"]["uid"]
    assert rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    assert v2["spec"]["model"]["artifactsUri"] in worker["spec"]["initContainers"][0]["command"]
    assert worker["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"


def test_hand_edits_to_the_rayservice_are_reverted(operator, custom, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    original = wait_for(lambda: _rayservice(custom, namespace), "the RayService")
    wait_for(lambda: _rayservice(custom, namespace)["metadata"]["resourceVersion"] and True, "settle")
    custom.patch_namespaced_custom_object(
        "ray.io", "v1", namespace, "rayservices", "bernini",
        {"spec": {"serveConfigV2": "applications: []\n", "upgradeStrategy": {"type": "None"}}},
    )
    reverted = wait_for(
        lambda: (rs := _rayservice(custom, namespace))["spec"]["serveConfigV2"] == original["spec"]["serveConfigV2"] and rs,
        "the operator to revert the edit", timeout=30,
    )
    assert reverted["spec"]["upgradeStrategy"]["type"] == "NewCluster"


def test_suspend_scales_to_zero_without_deleting(operator, custom, core, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    wait_for(lambda: len(core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=worker").items) >= 2,
             "worker pods", timeout=90)
    _patch(custom, namespace, {"spec": {"suspend": True}})

    def suspended():
        rayservice = _rayservice(custom, namespace)
        groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        return (_serve_config(rayservice)["applications"] == [] and all(g["maxReplicas"] == 0 for g in groups)
                and rayservice["spec"]["rayClusterConfig"]["suspend"] is True)

    wait_for(suspended, "a suspended cluster config, an empty Serve config and zero worker bounds")
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "Ready").get("reason") == "Suspended" and c,
                       "Ready=False/Suspended")
    assert _condition(current, "Ready")["status"] == "False"
    assert _rayservice(custom, namespace) is not None
    # KubeRay deletes every Ray pod of the suspended RayCluster (tests/realnodes shows it on real pods).
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="ray.io/is-ray-node=yes").items,
             "every Ray pod deleted", timeout=90)

    _patch(custom, namespace, {"spec": {"suspend": False}})
    wait_for(lambda: _serve_config(_rayservice(custom, namespace))["applications"], "the application back")


def test_deleting_the_deployment_leaves_no_children(operator, custom, core, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    wait_for(lambda: core.list_namespaced_pod(namespace, label_selector="ray.io/is-ray-node=yes").items, "pods", timeout=90)
    created = _get(custom, namespace)
    assert not created["metadata"].get("finalizers")
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini")
    wait_for(lambda: _rayservice(custom, namespace) is None, "the RayService to be garbage collected")
    wait_for(lambda: not _rayclusters(custom, namespace), "the RayCluster to be garbage collected")
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="ray.io/is-ray-node=yes").items,
             "the Ray pods to be gone", timeout=90)


INVALID = [
    ({"stages": {"diffusion": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas must not exceed maxReplicas"),
    ({"stages": {"encoder": {"targetOngoingRequests": 8, "maxOngoingRequests": 4}}}, "maxOngoingRequests must be at least targetOngoingRequests"),
    ({"accelerator": {"instanceTypes": ["p4d.24xlarge"]}}, "spec.accelerator.instanceTypes[0]"),
    ({"accelerator": {"instanceTypes": []}}, "spec.accelerator.instanceTypes"),
    ({"model": {"version": "1.0.0", "artifactsUri": "https://bucket/x"}}, "spec.model.artifactsUri"),
    ({"stages": {"decoder": {"neuronCores": -1}}}, "spec.stages.decoder.neuronCores"),
    ({"runtime": {"image": ""}}, "spec.runtime.image"),
    ({"upgradeStrategy": {"type": "BlueGreen"}}, "spec.upgradeStrategy.type"),
    ({"upgradeStrategy": {"deadlineSeconds": 30}}, "spec.upgradeStrategy.deadlineSeconds"),
    ({"gcsFaultTolerance": {"redisAddress": "169.254.169.254:6379", "passwordSecret": {"name": "r", "key": "p"}}},
     "gcsFaultTolerance.redisAddress must not be a link-local address"),
    ({"gcsFaultTolerance": {"redisAddress": "redis:6379"}}, "spec.gcsFaultTolerance.passwordSecret"),
    ({"upgradeStrategy": {"type": "Incremental"}}, "upgradeStrategy.incremental is set exactly when type is Incremental"),
    ({"upgradeStrategy": {"type": "NewCluster", "incremental": {"gatewayClassName": "traefik"}}},
     "upgradeStrategy.incremental is set exactly when type is Incremental"),
    ({"upgradeStrategy": {"type": "Incremental", "incremental": {}}}, "spec.upgradeStrategy.incremental.gatewayClassName"),
    ({"upgradeStrategy": {"type": "Incremental", "incremental": {
        "gatewayClassName": "traefik", "maxSurgePercent": 10, "stepSizePercent": 20}}},
     "stepSizePercent must not exceed maxSurgePercent"),
    ({"upgradeStrategy": {"type": "Incremental", "incremental": {"gatewayClassName": "traefik", "maxSurgePercent": 0}}},
     "spec.upgradeStrategy.incremental.maxSurgePercent"),
    ({"s3": {"region": "us-east-1", "accessKey": "AKIA..."}}, "accessKey"),
    ({"accelerator": {"kind": "nvidia"}}, "kind nvidia runs on g5.xlarge"),
    ({"accelerator": {"kind": "nvidia", "instanceTypes": ["g5.xlarge"], "schedulerName": "neuron-scheduler"}},
     "schedulerName is for kind neuron only"),
    ({"stages": {"diffusion": {"accelerators": 0.5}}}, "stages.diffusion.accelerators must be whole NeuronCores on kind neuron"),
    ({"accelerator": {"kind": "nvidia", "instanceTypes": ["g5.12xlarge"]}, "stages": {"decoder": {"accelerators": 1.5}}},
     "a fraction below 1 or whole GPUs on kind nvidia"),
    ({"accelerator": {"kind": "nvidia", "instanceTypes": ["g5.xlarge"]}, "stages": {"encoder": {"neuronCores": 1}}},
     "stages.encoder.neuronCores is for kind neuron; use accelerators"),
    ({"stages": {"encoder": {"neuronCores": 1, "accelerators": 1}}}, "set accelerators, or the deprecated neuronCores, not both"),
    ({"accelerator": {"kind": "cpu", "instanceTypes": ["m6i.xlarge"]}, "model": {"target": "inf2"}},
     "model.target must be the accelerator kind's target"),
    # Found by a campaign of bad inputs (the hardening issue):
    ({"runtime": {"image": "bernini serving:1"}}, "spec.runtime.image"),
    ({"runtime": {"image": "registry.example.com/Bernini-Serving:1"}}, "spec.runtime.image"),
    ({"runtime": {"image": "UPPER/name:tag"}}, "spec.runtime.image"),  # a path, not a registry: lower-case
    *[({"s3": {"region": "us-east-1", "endpointUrl": url}}, message) for url, message in (
        ("http://169.254.169.254/latest", "must not be a link-local"),
        ("http://169.254.170.23/v1/credentials", "must not be a link-local"),
        ("http://0.0.0.0:9000/", "must not be a link-local"),
        ("http://2852039166/", "must be an IPv4 address written as four decimal numbers"),
        ("http://0xa9fea9fe/", "must be an IPv4 address written as four decimal numbers"),
        ("http://0251.0376.0251.0376/", "must be an IPv4 address written as four decimal numbers"),
        ("http://169.254.43518/", "must be an IPv4 address written as four decimal numbers"),
        ("http://[fd00:ec2::254]/", "must hold an IPv6 address that is not link-local"),
        ("http://[fd00:ec2::23]/", "must hold an IPv6 address that is not link-local"),
        ("http://[fe80::1]/", "must hold an IPv6 address that is not link-local"),
        ("http://[::ffff:a9fe:a9fe]/", "must hold an IPv6 address that is not link-local"),
        ("http://[64:ff9b::a9fe:a9fe]/", "must hold an IPv6 address that is not link-local"),
        ("http://[2002:a9fe:a9fe::]/", "must hold an IPv6 address that is not link-local"),
        ("https://s3.example.com/a/../b", "no . or .. path segments"),
        ("http://user@169.254.169.254/", "spec.s3.endpointUrl"),
        ("https://exa_mple.com", "spec.s3.endpointUrl"),
        ("https://[::1", "spec.s3.endpointUrl"),
    )],
    ({"s3": {"region": "moon"}}, "spec.s3.region"),
    ({"runtime": {"neuronCompilerVersion": "02.0"}}, "spec.runtime.neuronCompilerVersion"),
    ({"runtime": {"rayVersion": "2.51.0"}}, "runtime.rayVersion must be 2.52.0 or newer"),
    ({"head": {"memory": "1"}}, "memory must be between 1Gi and 1Ti"),
    ({"head": {"cpu": "10m"}}, "cpu must be between 100m and 192"),
    ({"workers": {"memory": "2Ti"}}, "memory must be between 1Gi and 1Ti"),
    ({"stages": {"encoder": {"memory": "1Mi"}}}, "memory must be between 64Mi and 1Ti"),
    ({"ingress": {"memory": "10"}}, "memory must be between 64Mi and 1Ti"),
    ({"autoscaling": {"lookBackPeriodSeconds": 10}}, "spec.autoscaling.lookBackPeriodSeconds"),
]


@pytest.mark.parametrize("endpoint", ["https://s3.us-east-1.amazonaws.com", "http://127.0.0.1:9000",
                                      "https://minio.storage.svc.cluster.local:9000/", "https://10.1.2.3",
                                      "https://[2600:1f18::1]:8443/store", "http://[::1]:9000"])
def test_ordinary_endpoints_are_admitted(bernini_crd, custom, namespace, example_deployment, endpoint):
    body = example_deployment(publish=False)
    body["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": endpoint}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict",
                                           dry_run="All")


@pytest.mark.parametrize("change, message", INVALID, ids=[f"{m}-{i}" for i, (_, m) in enumerate(INVALID)])
def test_invalid_specs_are_refused_at_admission_naming_the_field(bernini_crd, custom, namespace, example_deployment, change, message):
    from kubernetes.client.exceptions import ApiException

    body = example_deployment(publish=False)
    for key, value in change.items():
        body["spec"][key] = {**body["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")
    assert refused.value.status in (400, 422)
    assert message in refused.value.body


def test_names_longer_than_kuberay_allows_are_refused(bernini_crd, custom, namespace, example_deployment):
    from kubernetes.client.exceptions import ApiException

    body = example_deployment(publish=False)
    body["metadata"]["name"] = "b" * 48
    with pytest.raises(ApiException) as refused:
        _create(custom, namespace, body)
    assert "metadata.name must be at most 47 characters" in refused.value.body


def test_a_stage_that_fits_no_instance_type_becomes_a_condition_and_an_event(operator, custom, core, namespace, example_deployment):
    body = example_deployment()
    body["spec"].update(stages={"diffusion": {"neuronCores": 4}}, layout="staged")
    _create(custom, namespace, body)
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "Rendered").get("reason") == "StageDoesNotFit" and c,
                       "Rendered=False/StageDoesNotFit")
    assert "diffusion asks 4 NeuronCores" in _condition(current, "Rendered")["message"]
    assert _rayservice(custom, namespace) is None
    wait_for(lambda: _events(core, namespace, "StageDoesNotFit"), "a StageDoesNotFit event")


def test_broken_artifacts_block_the_upgrade_and_leave_the_running_rayservice_alone(operator, custom, core, s3, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    wait_for(_rendered_generation(custom, namespace, 1), "the first version rendered")
    before = _rayservice(custom, namespace)

    missing = example_deployment(version="3.0.0", publish=False)
    _patch(custom, namespace, {"spec": {"model": missing["spec"]["model"]}})
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "ArtifactsVerified").get("reason") == "ManifestNotFound" and c,
                       "ArtifactsVerified=False/ManifestNotFound")
    assert _condition(current, "Ready")["reason"] == "ManifestNotFound"
    assert current["status"].get("modelVersion", "") != "3.0.0"
    wait_for(lambda: _events(core, namespace, "ManifestNotFound"), "a ManifestNotFound event")
    after = _rayservice(custom, namespace)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_a_foreign_rayservice_of_the_same_name_is_never_taken_over(operator, custom, core, namespace, example_deployment):
    foreign = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "bernini", "labels": {"team": "other"}},
               "spec": {"serveConfigV2": "applications: []\n", "rayClusterConfig": {"headGroupSpec": {
                   "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "other:1"}]}}}}}}
    custom.create_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", foreign)
    before = _rayservice(custom, namespace)
    _create(custom, namespace, example_deployment())
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "Rendered").get("reason") == "NameConflict" and c,
                       "Rendered=False/NameConflict")
    assert "not controlled by this BerniniDeployment" in _condition(current, "Rendered")["message"]
    assert _condition(current, "Ready")["status"] == "False"
    wait_for(lambda: _events(core, namespace, "NameConflict"), "a NameConflict event")
    after = _rayservice(custom, namespace)
    # KubeRay adds its finalizer, defaults and status to it; we must have written nothing.
    assert "bernini-operator" not in {field["manager"] for field in after["metadata"]["managedFields"]}
    assert after["spec"]["serveConfigV2"] == before["spec"]["serveConfigV2"]
    assert after["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "other:1"
    assert after["metadata"]["labels"] == {"team": "other"} and "ownerReferences" not in after["metadata"]


def test_a_spec_an_older_crd_admitted_is_reported_not_applied(operator, custom, core, api_client, bernini_crd, namespace, example_deployment):
    """The CRD is loosened (as an older release's might be) just long enough to store a version label the
    current schema refuses; the operator must say so rather than render it."""
    loosened = copy.deepcopy(bernini_crd)
    spec_schema = loosened["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec_schema["properties"]["model"]["properties"]["version"]["pattern"]
    body = example_deployment()
    body["spec"]["model"]["version"] = "1.0.0+not/a/label"
    try:
        apply_crd(api_client, loosened)
        wait_for(lambda: _created_or_refused(custom, namespace, body), "the loosened CRD to admit the object", timeout=30)
    finally:
        apply_crd(api_client, bernini_crd)
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "Ready").get("reason") == "InvalidSpec" and c,
                       "Ready=False/InvalidSpec")
    assert "spec.model.version" in _condition(current, "Ready")["message"]
    wait_for(lambda: _events(core, namespace, "InvalidSpec"), "an InvalidSpec event")
    assert _rayservice(custom, namespace) is None


def _created_or_refused(custom, namespace, body):
    """True once created; False while the API server still enforces the old pattern (its schema cache lags)."""
    try:
        _create(custom, namespace, body)
        return True
    except ApiException as error:
        if error.status == 422:
            return False
        raise


def test_operator_killed_mid_reconcile_converges_after_restart(operator, custom, namespace, example_deployment, local_s3):
    store = urllib.parse.urlsplit(local_s3.endpoint_url)
    gate = GatedForwarder((store.hostname, store.port))
    try:
        body = example_deployment()
        body["spec"]["s3"]["endpointUrl"] = f"http://127.0.0.1:{gate.port}"
        _create(custom, namespace, body)
        assert gate.connected.wait(30), "the operator never started the preflight"
        operator.kill()  # its preflight is waiting on the store: mid-reconcile, nothing rendered yet
        assert _rayservice(custom, namespace) is None
        gate.opened.set()
        operator.start()
        wait_for(lambda: _rayservice(custom, namespace), "the restarted operator to create the RayService")
        wait_for(_rendered_generation(custom, namespace, 1), "Rendered after restart")
    finally:
        gate.close()


def test_an_idle_deployment_costs_no_api_writes(scoped_operator, custom, namespace, example_deployment):
    operator = scoped_operator
    _create(custom, namespace, example_deployment())
    wait_for(lambda: _condition(_get(custom, namespace), "RayServiceReady").get("status") == "False", "KubeRay's first report")

    def snapshot():
        return (_get(custom, namespace)["metadata"]["resourceVersion"],
                _rayservice(custom, namespace)["metadata"]["resourceVersion"], _writes_and_reconciles(operator))

    # Settled: nothing moved across a full resync, so what follows measures idleness, not the tail of the rollout.
    settled = wait_for(_unchanged_for(snapshot, operator.resync_seconds + 1), "the deployment to settle")
    deployment_version, rayservice_version, (writes, reconciles) = settled
    assert _get(custom, namespace)["status"]["cost"]["workers"] >= 1  # idle with every status field filled in
    time.sleep(2.5 * operator.resync_seconds)  # two full resyncs
    assert _get(custom, namespace)["metadata"]["resourceVersion"] == deployment_version
    assert _rayservice(custom, namespace)["metadata"]["resourceVersion"] == rayservice_version
    writes_after, reconciles_after = _writes_and_reconciles(operator)
    assert reconciles_after >= reconciles + 2, "the resync did not run"
    assert writes_after == writes, f"idle resyncs wrote to the API server:\n{operator.log()[-3000:]}"


def _unchanged_for(snapshot, seconds: float):
    """A probe that answers snapshot()'s value once two readings `seconds` apart agree on the resourceVersions
    and write count (reconciles are expected to advance)."""
    def probe():
        before = snapshot()
        time.sleep(seconds)
        after = snapshot()
        return after if (before[0], before[1], before[2][0]) == (after[0], after[1], after[2][0]) else None
    return probe


def _writes_and_reconciles(operator) -> tuple[float, float]:
    samples = operator.metrics()
    writes = sum(v for k, v in samples.items() if k.startswith("bernini_api_writes_total{"))
    reconciles = sum(v for k, v in samples.items() if k.startswith("bernini_reconcile_total{"))
    return writes, reconciles


def test_metrics_count_deployments_by_ready_and_preflight_failures_by_reason(scoped_operator, custom, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    missing = example_deployment(version="4.0.0", publish=False)
    missing["metadata"]["name"] = "missing"
    _create(custom, namespace, missing)
    wait_for(lambda: _condition(_get(custom, namespace, "missing"), "Ready").get("reason") == "ManifestNotFound",
             "Ready=False/ManifestNotFound on the deployment without artifacts")
    wait_for(lambda: _condition(_get(custom, namespace), "RayServiceReady").get("status") == "False", "KubeRay's first report")
    samples = scoped_operator.metrics()
    assert samples['bernini_deployments{ready="False"}'] == 2  # no Ray head answers KubeRay here, so neither is Ready
    assert samples['bernini_deployments{ready="True"}'] == 0
    assert samples['bernini_preflight_failures_total{reason="ManifestNotFound"}'] >= 1
    assert 'bernini_preflight_failures_total{reason="Verified"}' not in samples


def test_two_differently_configured_operators_run_in_one_process(kubeconfig, bernini_crd, local_s3, core, custom,
                                                                 namespace, example_deployment):
    """No module state in the controller: two of them, each with its own namespace, workers and resync
    period, run side by side in one process and each sees only its own objects."""
    other = f"{namespace}-b"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        body = example_deployment()
        _create(custom, namespace, body)
        _create(custom, other, body)
        with OperatorProcess.paused():
            result = subprocess.run(
                [sys.executable, "-m", "tests.integration.two_operators", namespace, other],
                env={**os.environ, **local_s3.credentials_env, "KUBECONFIG": str(kubeconfig)},
                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.splitlines()[-1])
        assert seen[namespace] == {"deployments": [f"{namespace}/bernini"], "rayservices": [f"{namespace}/bernini"],
                                   "workers": 1, "resync_seconds": 2.0}
        assert seen[other] == {"deployments": [f"{other}/bernini"], "rayservices": [f"{other}/bernini"],
                               "workers": 3, "resync_seconds": 3600.0}
        assert _rayservice(custom, namespace) and _rayservice(custom, other)
    finally:
        core.delete_namespace(other)


def test_prewarm_runs_one_pod_per_allowed_node_while_the_version_rolls_out(operator, custom, core, api_client,
                                                                           namespace, example_deployment):
    # Admitted under the restricted level too; the cache is examples/artifacts-cache.yaml's claim.
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    volume, claim = node_cache_objects(namespace, "/var/lib/bernini-cache")  # KWOK's nodes never mount it
    core.create_persistent_volume(volume)
    try:
        core.create_namespaced_persistent_volume_claim(namespace, claim)
        body = example_deployment()
        body["spec"]["artifactsCache"] = {"claimName": claim["metadata"]["name"], "prewarm": True}
        _create(custom, namespace, body)
        apps = client.AppsV1Api(api_client)

        def prewarm_pods():
            return core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=prewarm").items

        # KubeRay never reports Ready without a Ray head here: the version is still rolling out.
        pods = wait_for(lambda: len(p := prewarm_pods()) == 2 and all(x.status.phase == "Running" for x in p) and p,
                        "a pre-warm pod Running on each inf2.xlarge node", timeout=90)
        assert sorted(core.read_node(p.spec.node_name).metadata.labels["node.kubernetes.io/instance-type"]
                      for p in pods) == ["inf2.xlarge", "inf2.xlarge"]
        assert all("aws.amazon.com/neuroncore" not in (c.resources.requests or {}) for p in pods
                   for c in p.spec.containers + p.spec.init_containers)
        daemonset = apps.read_namespaced_daemon_set("bernini-prewarm", namespace)
        assert daemonset.metadata.managed_fields[0].manager == "bernini-operator"

        # Suspended, nothing rolls out: the DaemonSet goes, and its pods with it.
        _patch(custom, namespace, {"spec": {"suspend": True}})
        wait_for(lambda: not apps.list_namespaced_daemon_set(namespace).items and not prewarm_pods(),
                 "the pre-warm DaemonSet and its pods gone", timeout=90)
    finally:
        core.delete_persistent_volume(volume["metadata"]["name"])


def test_a_tenants_daemonset_of_the_prewarm_name_is_never_applied_over_nor_deleted(operator, custom, core, api_client,
                                                                                   namespace, example_deployment):
    """The pre-warm DaemonSet's name is predictable: one the tenant made first stays exactly as it was, through a
    rollout and a suspend, and the object says why it is not pre-warming."""
    apps = client.AppsV1Api(api_client)
    labels = {"app": "theirs"}
    foreign = apps.create_namespaced_daemon_set(namespace, {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "bernini-prewarm"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "nodeSelector": {"no-such-node": "x"}, "containers": [{"name": "theirs", "image": "theirs:1"}]}}}})
    body = example_deployment()
    body["spec"]["artifactsCache"] = {"claimName": "bernini-cache", "prewarm": True}
    _create(custom, namespace, body)
    event = wait_for(lambda: next(iter(_events(core, namespace, "PrewarmNameConflict")), None),
                     "a PrewarmNameConflict Event", timeout=60)
    assert event.type == "Warning" and "not controlled by this BerniniDeployment" in event.message
    _patch(custom, namespace, {"spec": {"suspend": True}})
    wait_for(lambda: _condition(_get(custom, namespace), "Ready").get("reason") == "Suspended", "suspended", timeout=60)
    time.sleep(6)  # a resync (5 s) after the suspend: a delete would have gone out by now
    live = apps.read_namespaced_daemon_set("bernini-prewarm", namespace)
    assert live.metadata.uid == foreign.metadata.uid, "the tenant's DaemonSet was deleted"
    assert live.spec.template.spec.containers[0].image == "theirs:1"
    assert "bernini-operator" not in {field.manager for field in live.metadata.managed_fields}
    assert len(_events(core, namespace, "PrewarmNameConflict")) == 1


def test_the_operator_exits_by_itself_on_sigterm(scoped_operator):
    """Kubernetes stops a pod with SIGTERM and kills it only when the grace period ends: the operator must exit on
    its own (it used to wait for its stop flag until SIGKILL)."""
    started = time.monotonic()
    scoped_operator.process.terminate()
    assert scoped_operator.process.wait(10) == 0
    print(f"\nSIGTERM -> exit in {time.monotonic() - started:.1f}s")
