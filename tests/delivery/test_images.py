"""The production images cannot be built here (no Docker engine); the local serving image that the real-node
tests run is built from the same package set (hack/images). These tests read the Dockerfiles as instructions
and check what the chart and the rendered pods run against the CLI the images install."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from bernini.cli import build_parser
from tests.delivery.dockerfile import exec_form, last, pip_requirements
from tests.delivery.test_chart import CHART, run

ROOT = Path(__file__).parents[2]
IMAGES = ROOT / "images"
# The base images (the Neuron DLC, PyTorch's CUDA image) bring their own torch build and numpy; everything
# else must match pyproject.
FROM_THE_BASE = {"torch", "numpy"}
SERVING = [("serving.Dockerfile", "bernini-production.yaml"), ("serving-cuda.Dockerfile", "bernini-production-g5.yaml")]


def test_operator_image_entrypoint_accepts_the_charts_arguments():
    dockerfile = IMAGES / "operator.Dockerfile"
    assert exec_form(last(dockerfile, "ENTRYPOINT")) == ["bernini"] and last(dockerfile, "USER") == "65532:65532"
    rendered = run("helm", "template", "bernini", str(CHART), "--kube-version", "1.34.12",
                   "--set", "watchNamespaces={models,staging}").stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.namespace == ["models", "staging"] and args.liveness.endswith(":8081/healthz")
    assert pod["securityContext"]["runAsUser"] == 65532


@pytest.mark.parametrize("dockerfile, example", SERVING)
def test_serving_image_runs_the_init_container_command_as_the_pods_user(dockerfile, example):
    from bernini.api.spec import BerniniDeploymentSpec
    from bernini.render.rayservice import render_rayservice
    from tests.unit.specs import make_manifest

    spec = BerniniDeploymentSpec.model_validate(yaml.safe_load((ROOT / "examples" / example).read_text())["spec"])
    rayservice = render_rayservice("bernini-prod", "models", "uid", spec, make_manifest("1.4.0"), "f" * 64)
    pod = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    command = pod["initContainers"][0]["command"]
    assert command[0] == "bernini"
    args = build_parser().parse_args(command[1:])
    assert (args.uri, str(args.dest)) == (spec.model.artifacts_uri, "/mnt/bernini/artifacts")
    user, group = last(IMAGES / dockerfile, "USER").split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(user), int(group))


def test_the_cuda_image_declares_the_cuda_version_the_g5_example_names():
    label = last(IMAGES / "serving-cuda.Dockerfile", "LABEL")
    declared = label.split("=", 1)[1].strip('"')
    assert f"cuda{declared}" in last(IMAGES / "serving-cuda.Dockerfile", "ARG")
    example = yaml.safe_load((ROOT / "examples" / "bernini-production-g5.yaml").read_text())
    assert example["spec"]["runtime"]["cudaVersion"] == declared


@pytest.mark.parametrize("dockerfile", [dockerfile for dockerfile, _ in SERVING])
def test_serving_dockerfile_and_the_local_image_install_the_same_packages(dockerfile):
    """hack/images installs this package's serve extra; each Dockerfile must pin the same set around its base."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {Requirement(r).name: str(Requirement(r).specifier) for r in extras["model"] + extras["serve"]
              if not r.startswith("bernini-operator")}
    installed = {Requirement(r).name: str(Requirement(r).specifier) for r in pip_requirements(IMAGES / dockerfile)}
    assert set(installed) | FROM_THE_BASE == set(wanted), (installed, wanted)
    assert {name: spec for name, spec in wanted.items() if name not in FROM_THE_BASE} == installed
    assert "/src[serve]" in (ROOT / "hack" / "images" / "serving-base.sh").read_text()


def test_console_commands_start():
    for command in (["operator", "--help"], ["artifacts", "pull", "--help"], ["compile", "--help"]):
        result = subprocess.run([sys.executable, "-m", "bernini", *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
