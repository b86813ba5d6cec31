"""The pure renderer: BerniniDeployment -> RayService, checked field by field and against Ray's own schema."""

import json
import warnings
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from bernini.api.spec import BerniniDeploymentSpec
from bernini.domain.pipeline import STAGES
from bernini.render.capacity import StageDoesNotFit, WorkerDoesNotFit, plan
from bernini.render.pods import SERVE_PROCESS_ENV
from bernini.render.rayservice import render_rayservice
from tests.unit.specs import make_manifest, make_spec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("bernini-*.yaml"))


def render(spec, name="bernini"):
    return render_rayservice(name, "models", "uid-1", spec, make_manifest(spec.model.version), "f" * 64)


def serve(rayservice) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_a_serve_config_ray_accepts(example):
    spec = BerniniDeploymentSpec.model_validate(yaml.safe_load(example.read_text())["spec"])
    for variant in (spec, spec.model_copy(update={"suspend": True})):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Ray warns first about what a later release will refuse
            ServeDeploySchema.model_validate(serve(render(variant)))


def test_worker_groups_follow_the_neuron_recipe():
    cluster = render(make_spec(accelerator={"instanceTypes": ["inf2.xlarge", "inf2.24xlarge"], "schedulerName": "neuron-scheduler"}))["spec"]["rayClusterConfig"]
    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    assert set(groups) == {"inf2-xlarge", "inf2-24xlarge"}
    big = groups["inf2-24xlarge"]
    assert big["rayStartParams"]["resources"] == "'{\"neuron_cores\": 12}'"
    assert json.loads(big["rayStartParams"]["resources"].strip("'")) == {"neuron_cores": 12}
    pod = big["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["resources"]["requests"] == worker["resources"]["limits"]
    assert worker["resources"]["limits"]["aws.amazon.com/neuroncore"] == "12"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "inf2.24xlarge"}
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["schedulerName"] == "neuron-scheduler"
    assert any(v["name"] == "dshm" and v["emptyDir"]["medium"] == "Memory" for v in pod["volumes"])
    puller = pod["initContainers"][0]
    assert puller["command"][:3] == ["bernini", "artifacts", "pull"]
    assert puller["command"][puller["command"].index("--manifest-sha256") + 1] == "f" * 64
    # CPU-bound, so the pull runs on the worker's CPUs (no extra room: the pod asks for the larger of the two).
    assert puller["resources"]["limits"]["cpu"] == worker["resources"]["limits"]["cpu"] == "95"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    for ray_container in (head, worker):  # every process that routes or serves runs with the same Serve settings
        assert {item["name"]: item["value"] for item in ray_container["env"]} == SERVE_PROCESS_ENV


def test_head_stays_off_accelerated_nodes_and_hosts_no_replicas():
    cluster = render(make_spec())["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    terms = head["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expression = terms["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expression["operator"] == "NotIn" and "inf2" in expression["values"]
    assert "tolerations" not in head["template"]["spec"]
    assert "headService" not in head  # kuberay#2433


def test_security_defaults_token_auth_and_restricted_pods():
    rayservice = render(make_spec())
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["enableInTreeAutoscaling"] is True
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(rayservice)


def test_serve_deployments_autoscale_per_stage():
    spec = make_spec(stages={"diffusion": {"neuronCores": 2, "minReplicas": 1, "maxReplicas": 6, "targetOngoingRequests": 2, "maxOngoingRequests": 3}},
                     autoscaling={"upscaleDelaySeconds": 5, "lookBackPeriodSeconds": 17})
    application = serve(render(spec))["applications"][0]
    deployments = {d["name"]: d for d in application["deployments"]}
    assert list(deployments) == ["Encoder", "Diffusion", "Decoder", "Triangulation", "BerniniIngress"]
    diffusion = deployments["Diffusion"]
    assert diffusion["ray_actor_options"]["resources"] == {"neuron_cores": 2}
    assert diffusion["autoscaling_config"]["min_replicas"] == 1
    assert diffusion["autoscaling_config"]["max_replicas"] == 6
    assert {d["autoscaling_config"]["look_back_period_s"] for d in deployments.values()} == {17}
    assert {d["autoscaling_config"]["upscale_delay_s"] for d in deployments.values()} == {5}
    assert diffusion["max_ongoing_requests"] == 3
    assert "resources" not in deployments["Triangulation"]["ray_actor_options"]
    assert application["import_path"] == "bernini.serve.app:app_builder"
    assert list(application["runtime_env"]) == ["env_vars"]  # KubeRay's REST deploy refuses a local working_dir


def test_only_the_ingress_refuses_a_stage_queues_all_the_ingress_has_in_flight():
    spec = make_spec(ingress={"maxOngoingRequests": 5, "maxReplicas": 3},
                     stages={"encoder": {"maxOngoingRequests": 1, "maxReplicas": 1}})
    deployments = {d["name"]: d for d in serve(render(spec))["applications"][0]["deployments"]}
    assert deployments.pop("BerniniIngress")["max_queued_requests"] == 5 * 3  # the proxies' 503 past that
    # One ingress replica is each stage's caller: it never has more than its 5 in flight, so none is refused.
    assert {name: d["max_queued_requests"] for name, d in deployments.items()} == dict.fromkeys(deployments, 5)


def test_suspend_removes_the_application_and_zeroes_the_workers():
    rayservice = render(make_spec(suspend=True))
    assert rayservice["spec"]["rayClusterConfig"]["suspend"] is True
    assert render(make_spec())["spec"]["rayClusterConfig"]["suspend"] is False
    assert serve(rayservice)["applications"] == []
    for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["minReplicas"] == group["maxReplicas"] == group["replicas"] == 0


def test_owner_reference_and_labels_carry_no_tracking_labels():
    metadata = render(make_spec())["metadata"]
    assert metadata["ownerReferences"] == [
        {"apiVersion": "bernini.dev/v1alpha1", "kind": "BerniniDeployment", "name": "bernini", "uid": "uid-1",
         "controller": True, "blockOwnerDeletion": True}
    ]
    assert all(not key.startswith("argocd.argoproj.io") for key in metadata["labels"])


def test_packing_default_spec_needs_two_inf2_xlarge_at_minimum():
    capacity = plan(make_spec())
    assert (capacity.min_workers, capacity.min_accelerators) == (2, 3)
    assert capacity.max_accelerators == 2 + 4 + 4
    # The README's figures: 2 nodes at minimum, 9 at most (10 NeuronCores alone need 5 two-core nodes;
    # the replicas' CPU asks at maximum need the rest).
    assert capacity.max_workers == 9


def test_every_catalogued_instance_type_is_in_the_crd_enum_and_packs():
    from bernini.api.crd import custom_resource_definition
    from bernini.domain.instances import CATALOGUE

    schema = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    enum = schema["properties"]["spec"]["properties"]["accelerator"]["properties"]["instanceTypes"]["items"]["enum"]
    assert enum == list(CATALOGUE)
    for name, instance in CATALOGUE.items():
        capacity = plan(make_spec(accelerator={"kind": instance.kind, "instanceTypes": [name]}))
        assert capacity.groups[0].worker.instance is instance and capacity.min_workers >= 1


def test_packing_prefers_the_smallest_type_for_minimum_and_bounds_every_type_for_maximum():
    capacity = plan(make_spec(accelerator={"instanceTypes": ["inf2.24xlarge", "inf2.xlarge"]}))
    bounds = {g.worker.instance.name: (g.min_replicas, g.max_replicas) for g in capacity.groups}
    assert bounds["inf2.xlarge"][0] == 2 and bounds["inf2.24xlarge"][0] == 0
    assert bounds["inf2.24xlarge"][1] == 1  # all stages at max fit one 24xlarge
    assert [g.worker.instance.name for g in capacity.groups] == ["inf2.24xlarge", "inf2.xlarge"]


def test_a_stage_that_fits_no_allowed_type_is_refused_with_its_name():
    with pytest.raises(StageDoesNotFit, match="diffusion asks 4 NeuronCores"):
        plan(make_spec(stages={"diffusion": {"neuronCores": 4}}))
    assert plan(make_spec(stages={"diffusion": {"neuronCores": 4}}, accelerator={"instanceTypes": ["inf2.24xlarge"]}))


def test_worker_pods_take_the_size_spec_workers_sets_and_pack_by_it():
    spec = make_spec(workers={"cpus": 1, "memory": "3Gi"},
                     stages={name: {"cpus": 0.25, "memory": "512Mi"} for name in STAGES},
                     ingress={"cpus": 0.25, "memory": "512Mi"})
    group = render(spec)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "1", "memory": "3072Mi", "aws.amazon.com/neuroncore": "2"}
    assert group["rayStartParams"]["num-cpus"] == "1"
    # 3 NeuronCore replicas at minimum need two 2-core nodes; the CPU replicas (1.25 CPUs) spill onto the second.
    assert plan(spec).min_workers == 2


def test_worker_pods_larger_than_the_instance_are_refused_with_the_sizes():
    with pytest.raises(WorkerDoesNotFit, match="spec.workers asks 4 CPUs .* inf2.xlarge offers at most 3 CPUs"):
        plan(make_spec(workers={"cpus": 4}))


def test_renderer_returns_fresh_objects():
    spec = make_spec()
    first, second = render(spec), render(spec)
    first["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    assert second["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000
