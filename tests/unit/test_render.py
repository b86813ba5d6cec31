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
    assert list(groups) == ["inf2-xlarge", "inf2-24xlarge", "m6i-xlarge"]
    big = groups["inf2-24xlarge"]
    assert big["rayStartParams"]["resources"] == "'{\"bernini_accelerated_worker\": 1000, \"neuron_cores\": 12}'"
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


def test_the_cpu_group_runs_cpu_work_on_a_general_purpose_type_without_artifacts_accelerators_or_store_access():
    spec = make_spec(cpuWorkers={"instanceType": "c6i.4xlarge", "cpus": 8}, serviceAccountName="reads-artifacts")
    POD = 32 * 2**30 * 8 // 10
    rayservice = render(spec)
    *accelerated, cpu = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert cpu["groupName"] == "c6i-4xlarge"
    assert cpu["rayStartParams"] == {"num-cpus": "8", "resources": "'{\"bernini_cpu_worker\": 1000}'",
                                     # 80% of 32 GiB: Ray's object store keeps 30% in /dev/shm, replicas the rest.
                                     "memory": str(POD - POD * 3 // 10), "object-store-memory": str(POD * 3 // 10)}
    pod = cpu["template"]["spec"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "c6i.4xlarge"}
    assert "initContainers" not in pod and "tolerations" not in pod and "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "26214Mi"}
    assert [volume["name"] for volume in pod["volumes"]] == ["dshm"]
    [group] = accelerated
    assert group["template"]["spec"]["serviceAccountName"] == "reads-artifacts"
    options = {d["name"]: d["ray_actor_options"] for d in serve(rayservice)["applications"][0]["deployments"]}
    assert {name: option["resources"] for name, option in options.items()} == {
        "FusedStages": {"bernini_accelerated_worker": 0.001, "neuron_cores": 1},
        "Triangulation": {"bernini_cpu_worker": 0.001}, "BerniniIngress": {"bernini_cpu_worker": 0.001}}


def test_a_stage_given_accelerators_leaves_the_cpu_group_and_kind_cpu_has_no_separate_group():
    spec = make_spec(layout="staged", stages={"triangulation": {"accelerators": 1}, "encoder": {"accelerators": 0}})
    capacity = plan(spec)
    # The encoder loads a graph, so it stays with the artifacts even at 0 NeuronCores; only the ingress is CPU work.
    assert [(g.worker.instance.name, g.min_replicas) for g in capacity.groups] == [("inf2.xlarge", 2), ("m6i.xlarge", 1)]
    options = {d["name"]: d["ray_actor_options"] for d in serve(render(spec))["applications"][0]["deployments"]}
    assert options["Triangulation"]["resources"] == {"bernini_accelerated_worker": 0.001, "neuron_cores": 1}
    assert options["Encoder"]["resources"] == {"bernini_accelerated_worker": 0.001}
    assert options["BerniniIngress"]["resources"] == {"bernini_cpu_worker": 0.001}
    cpu_kind = plan(make_spec(accelerator={"kind": "cpu"}))
    assert [g.worker.instance.name for g in cpu_kind.groups] == ["m6i.xlarge"]


def test_the_fused_layout_is_one_deployment_for_the_three_graphs_and_staged_one_per_stage():
    fused = serve(render(make_spec(stages={"fused": {"accelerators": 2, "maxReplicas": 6}})))["applications"][0]
    assert [d["name"] for d in fused["deployments"]] == ["FusedStages", "Triangulation", "BerniniIngress"]
    assert fused["args"]["layout"] == "fused"
    assert fused["deployments"][0]["autoscaling_config"]["max_replicas"] == 6
    assert fused["deployments"][0]["ray_actor_options"]["resources"]["neuron_cores"] == 2
    staged = serve(render(make_spec(layout="staged")))["applications"][0]
    assert [d["name"] for d in staged["deployments"]] == ["Encoder", "Diffusion", "Decoder", "Triangulation",
                                                          "BerniniIngress"]
    assert staged["args"]["layout"] == "staged"


def test_a_layout_change_changes_every_pod_template_so_it_rolls_out_on_a_new_cluster():
    def templates(layout):
        cluster = render(make_spec(layout=layout))["spec"]["rayClusterConfig"]
        return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    fused, staged = templates("fused"), templates("staged")
    assert [t["metadata"]["labels"]["bernini.dev/layout"] for t in fused] == ["fused"] * 3
    assert all(a != b for a, b in zip(fused, staged))


def test_the_packing_counts_the_memory_ray_offers_replicas_not_the_whole_pod():
    # An inf2.xlarge worker pod has 12.8 GiB; Ray's object store keeps 30%, so replicas get 8.96 GiB.
    with pytest.raises(StageDoesNotFit, match="fused asks 1 NeuronCores, 1 CPUs and 9Gi"):
        plan(make_spec(stages={"fused": {"memory": "9Gi"}}))
    capacity = plan(make_spec(stages={"fused": {"memory": "4Gi", "maxReplicas": 4}}))
    assert capacity.groups[0].max_replicas == 2  # two 4Gi replicas per worker, as Ray will place them
    [group, _] = render(make_spec())["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert int(group["rayStartParams"]["memory"]) == capacity.groups[0].worker.replica_memory_bytes
    shm = next(v for v in group["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert int(group["rayStartParams"]["object-store-memory"]) // 2**20 == int(shm["emptyDir"]["sizeLimit"][:-2])


def test_the_cpu_group_runs_as_its_own_service_account_when_one_is_set():
    spec = make_spec(serviceAccountName="reads-artifacts", cpuWorkers={"serviceAccountName": "pulls-images"})
    *accelerated, cpu = render(spec)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert cpu["template"]["spec"]["serviceAccountName"] == "pulls-images"
    assert accelerated[0]["template"]["spec"]["serviceAccountName"] == "reads-artifacts"


def test_the_autoscaler_sidecar_asks_less_than_kuberays_default_and_keeps_its_memory_bounded():
    options = render(make_spec())["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert options["resources"]["requests"] == {"cpu": "200m", "memory": "512Mi"}
    assert options["resources"]["limits"]["memory"] == options["resources"]["requests"]["memory"]


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
                     autoscaling={"upscaleDelaySeconds": 5, "lookBackPeriodSeconds": 17}, layout="staged")
    application = serve(render(spec))["applications"][0]
    deployments = {d["name"]: d for d in application["deployments"]}
    assert list(deployments) == ["Encoder", "Diffusion", "Decoder", "Triangulation", "BerniniIngress"]
    diffusion = deployments["Diffusion"]
    assert diffusion["ray_actor_options"]["resources"] == {"bernini_accelerated_worker": 0.001, "neuron_cores": 2}
    assert diffusion["autoscaling_config"]["min_replicas"] == 1
    assert diffusion["autoscaling_config"]["max_replicas"] == 6
    assert {d["autoscaling_config"]["look_back_period_s"] for d in deployments.values()} == {17}
    assert {d["autoscaling_config"]["upscale_delay_s"] for d in deployments.values()} == {5}
    assert diffusion["max_ongoing_requests"] == 3
    assert deployments["Triangulation"]["ray_actor_options"]["resources"] == {"bernini_cpu_worker": 0.001}
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


def test_packing_default_spec_needs_one_inf2_xlarge_and_one_cpu_node_at_minimum():
    def bounds(capacity):
        return [(g.worker.instance.name, g.min_replicas, g.max_replicas) for g in capacity.groups]
    # The docs' figures. Fused: one NeuronCore per pipeline, two 1-core replicas per inf2.xlarge.
    fused = plan(make_spec())
    assert (fused.min_accelerators, fused.max_accelerators) == (1, 4)
    assert bounds(fused) == [("inf2.xlarge", 1, 2), ("m6i.xlarge", 1, 4)]
    # Staged: 3 NeuronCores at minimum (two nodes), 10 at most (5 nodes). Either way the CPU group holds 4
    # triangulation replicas of 2 CPUs each at most, one per 3-CPU m6i.xlarge worker, the ingress beside them.
    staged = plan(make_spec(layout="staged"))
    assert (staged.min_accelerators, staged.max_accelerators) == (3, 2 + 4 + 4)
    assert bounds(staged) == [("inf2.xlarge", 2, 5), ("m6i.xlarge", 1, 4)]


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
    capacity = plan(make_spec(accelerator={"instanceTypes": ["inf2.24xlarge", "inf2.xlarge"]}, layout="staged"))
    bounds = {g.worker.instance.name: (g.min_replicas, g.max_replicas) for g in capacity.groups}
    assert bounds["inf2.xlarge"][0] == 2 and bounds["inf2.24xlarge"][0] == 0
    assert bounds["inf2.24xlarge"][1] == 1  # all stages at max fit one 24xlarge
    assert [g.worker.instance.name for g in capacity.groups] == ["inf2.24xlarge", "inf2.xlarge", "m6i.xlarge"]


def test_a_stage_that_fits_no_allowed_type_is_refused_with_its_name():
    with pytest.raises(StageDoesNotFit, match="diffusion asks 4 NeuronCores"):
        plan(make_spec(stages={"diffusion": {"neuronCores": 4}}, layout="staged"))
    assert plan(make_spec(stages={"diffusion": {"neuronCores": 4}}, accelerator={"instanceTypes": ["inf2.24xlarge"]},
                          layout="staged"))
    with pytest.raises(StageDoesNotFit, match=r"triangulation asks 0 NeuronCores, 8 CPUs .* \(m6i.xlarge\)"):
        plan(make_spec(stages={"triangulation": {"cpus": 8}}))


def test_worker_pods_take_the_size_spec_workers_sets_and_pack_by_it():
    spec = make_spec(workers={"cpus": 1, "memory": "3Gi"}, layout="staged",
                     stages={name: {"cpus": 0.25, "memory": "512Mi"} for name in STAGES},
                     ingress={"cpus": 0.25, "memory": "512Mi"})
    group = render(spec)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "1", "memory": "3072Mi", "aws.amazon.com/neuroncore": "2"}
    assert group["rayStartParams"]["num-cpus"] == "1"
    # 3 NeuronCore replicas at minimum need two 2-core nodes (0.75 CPU of the 1 on the first); the CPU group one.
    assert plan(spec).min_workers == 2 + 1


def test_worker_pods_larger_than_the_instance_are_refused_with_the_sizes():
    with pytest.raises(WorkerDoesNotFit, match="spec.workers asks 4 CPUs .* inf2.xlarge offers at most 3 CPUs"):
        plan(make_spec(workers={"cpus": 4}))


def test_renderer_returns_fresh_objects():
    spec = make_spec()
    first, second = render(spec), render(spec)
    first["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    assert second["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000


def test_gcs_fault_tolerance_points_the_head_at_redis_with_the_password_from_its_secret_and_leaves_it_out_of_serving():
    plain = render_rayservice("b", "n", "u", make_spec(), make_manifest(), "f" * 64)["spec"]
    assert "gcsFaultToleranceOptions" not in plain["rayClusterConfig"] and "excludeHeadPodFromServeSvc" not in plain
    spec = make_spec(gcsFaultTolerance={"redisAddress": "redis.ray-state.svc:6379",
                                        "passwordSecret": {"name": "redis", "key": "password"}})
    rendered = render_rayservice("b", "n", "u", spec, make_manifest(), "f" * 64)["spec"]
    assert rendered["rayClusterConfig"]["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis.ray-state.svc:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}}}
    assert rendered["excludeHeadPodFromServeSvc"] is True


@pytest.mark.parametrize("address", ["169.254.169.254:6379", "redis", "redis:port", "Redis:6379", "a b:1"])
def test_a_redis_address_that_is_not_host_and_port_or_is_link_local_is_refused(address):
    with pytest.raises(ValueError):
        make_spec(gcsFaultTolerance={"redisAddress": address, "passwordSecret": {"name": "r", "key": "p"}})
