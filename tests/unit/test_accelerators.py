"""One BerniniDeployment, three accelerator kinds: what each renders, packs and accepts as artifacts."""

import json
from decimal import Decimal

import pytest

from bernini.artifacts.preflight import judge
from bernini.domain.instances import CATALOGUE, KINDS
from bernini.render.capacity import StageDoesNotFit, plan
from tests.unit.specs import make_manifest, make_spec
from tests.unit.test_render import render, serve

GPU_SHARING = {"encoder": {"accelerators": 0.25}, "diffusion": {"accelerators": 1}, "decoder": {"accelerators": 0.5}}


def _worker_group(rayservice):
    """The first (accelerated) worker group."""
    group = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return group, group["template"]["spec"]


def _start_resources(group) -> dict:
    return json.loads(group["rayStartParams"]["resources"].strip("'"))


ACCELERATED, ON_CPU = {"bernini_accelerated_worker": 0.001}, {"bernini_cpu_worker": 0.001}


def _actor_options(rayservice) -> dict:
    return {d["name"]: d["ray_actor_options"] for d in serve(rayservice)["applications"][0]["deployments"]}


def test_nvidia_workers_ask_whole_gpus_tolerate_the_gpu_taint_and_replicas_share_gpus_by_fractions():
    spec = make_spec(accelerator={"kind": "nvidia", "instanceTypes": ["g5.xlarge"]}, stages=GPU_SHARING, layout="staged")
    rayservice = render(spec)
    group, pod = _worker_group(rayservice)
    assert {key: value for key, value in group["rayStartParams"].items() if "memory" not in key and key != "resources"} \
        == {"num-cpus": "3", "num-gpus": "1"}
    assert _start_resources(group) == {"bernini_accelerated_worker": 1000}
    worker = pod["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert not any(key.startswith("aws.amazon.com") for key in worker["resources"]["limits"])
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert "schedulerName" not in pod
    options = _actor_options(rayservice)
    assert (options["Encoder"]["num_gpus"], options["Diffusion"]["num_gpus"], options["Decoder"]["num_gpus"]) == (0.25, 1, 0.5)
    assert "num_gpus" not in options["Triangulation"] and "num_gpus" not in options["BerniniIngress"]
    assert [options[name]["resources"] for name in ("Encoder", "Triangulation", "BerniniIngress")] == [
        ACCELERATED, ON_CPU, ON_CPU]
    # 1.75 GPUs at minimum: the encoder's quarter and the decoder's half share the second g5.xlarge; the
    # triangulation and the ingress take one m6i.xlarge.
    capacity = plan(spec)
    assert (capacity.min_accelerators, capacity.min_workers) == (Decimal("1.75"), 3)
    assert [(g.worker.instance.name, g.min_replicas) for g in capacity.groups] == [("g5.xlarge", 2), ("m6i.xlarge", 1)]


def test_the_cpu_kind_asks_no_accelerator_and_lands_on_general_purpose_nodes():
    spec = make_spec(accelerator={"kind": "cpu"})
    assert (spec.target, spec.accelerator.allowed_types) == ("cpu", ["m6i.xlarge"])
    rayservice = render(spec)
    group, pod = _worker_group(rayservice)
    assert {key: value for key, value in group["rayStartParams"].items() if "memory" not in key} == {"num-cpus": "3"}
    assert set(pod["containers"][0]["resources"]["limits"]) == {"cpu", "memory"}
    assert "tolerations" not in pod
    options = _actor_options(rayservice)
    assert not any("resources" in option or "num_gpus" in option for option in options.values())
    assert plan(spec).max_accelerators == 0


def test_the_neuron_kind_keeps_its_recipe_and_the_deprecated_field_renders_the_same():
    old = render(make_spec(stages={"diffusion": {"neuronCores": 2}}, accelerator={"instanceTypes": ["inf2.24xlarge"]},
                           layout="staged"))
    new = render(make_spec(stages={"diffusion": {"accelerators": 2}}, accelerator={"instanceTypes": ["inf2.24xlarge"]},
                           layout="staged"))
    assert old == new
    group, pod = _worker_group(new)
    assert group["rayStartParams"]["num-cpus"] == "95"
    assert _start_resources(group) == {"bernini_accelerated_worker": 1000, "neuron_cores": 12}
    assert pod["tolerations"][0]["key"] == "aws.amazon.com/neuron"
    assert _actor_options(new)["Diffusion"]["resources"] == {**ACCELERATED, "neuron_cores": 2}


def test_the_head_stays_off_every_accelerated_family_of_the_catalogue():
    head = render(make_spec())["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    [term] = head["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    avoided = set(term["matchExpressions"][0]["values"])
    assert avoided == {t.family for t in CATALOGUE.values() if t.kind != "cpu"}
    assert {"inf2", "trn1", "g5", "g6", "g6e"} <= avoided and "m6i" not in avoided


def test_a_stage_larger_than_any_gpu_type_is_refused_in_gpus():
    spec = make_spec(accelerator={"kind": "nvidia", "instanceTypes": ["g5.xlarge", "g6.xlarge"]},
                     stages={"diffusion": {"accelerators": 2}}, layout="staged")
    with pytest.raises(StageDoesNotFit, match="diffusion asks 2 GPUs"):
        plan(spec)
    fused = make_spec(accelerator={"kind": "nvidia", "instanceTypes": ["g5.xlarge"]}, stages={"fused": {"accelerators": 2}})
    with pytest.raises(StageDoesNotFit, match="fused asks 2 GPUs"):
        plan(fused)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_defaults_to_its_smallest_type_and_the_kind_target(kind):
    spec = make_spec(accelerator={"kind": kind})
    [instance] = spec.accelerator.allowed_types
    assert CATALOGUE[instance].kind == kind and spec.target == KINDS[kind].target
    assert judge(spec, make_manifest(target=KINDS[kind].target), "f" * 64).cause.reason == "Verified"


@pytest.mark.parametrize(
    "spec, manifest, reason, words",
    [
        (make_spec(accelerator={"kind": "nvidia"}), make_manifest(), "TargetMismatch", "accelerator kind nvidia needs cuda"),
        (make_spec(accelerator={"kind": "cpu"}), make_manifest(target="cuda"), "TargetMismatch", "compiled for cuda"),
        (make_spec(accelerator={"kind": "nvidia"}, runtime={"cudaVersion": "12.4"}), make_manifest(target="cuda", cuda="13.0"),
         "CudaIncompatible", "traced with CUDA 13.0"),
        (make_spec(accelerator={"kind": "nvidia"}, runtime={"cudaVersion": "13.0"}), make_manifest(target="cuda", cuda="12.4"),
         "Verified", "cuda"),
        # cpu graphs on Neuron nodes: only by asking for them in spec.model.target (how the local nodes test it).
        (make_spec(model={"target": "cpu"}), make_manifest(target="cpu"), "Verified", "cpu"),
    ],
)
def test_the_preflight_matches_artifacts_to_the_kind(spec, manifest, reason, words):
    result = judge(spec, manifest, "f" * 64)
    assert result.cause.reason == reason and words in result.cause.message
