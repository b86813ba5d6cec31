"""The images cannot be built here (no Docker engine); their entrypoints are checked as Python commands:
what the chart and the rendered pods run must parse and start with the CLI the images install."""

import subprocess
import sys
from pathlib import Path

import yaml

from bernini.cli import build_parser
from tests.delivery.test_chart import CHART, run

IMAGES = Path(__file__).parents[2] / "images"


def test_operator_image_entrypoint_accepts_the_charts_arguments():
    dockerfile = (IMAGES / "operator.Dockerfile").read_text()
    assert 'ENTRYPOINT ["bernini"]' in dockerfile and "USER 65532:65532" in dockerfile
    rendered = run("helm", "template", "bernini", str(CHART), "--kube-version", "1.34.12",
                   "--set", "watchNamespaces={models,staging}").stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.namespace == ["models", "staging"] and args.liveness.endswith(":8081/healthz")
    assert pod["securityContext"]["runAsUser"] == 65532


def test_serving_image_runs_the_init_container_command():
    from bernini.api.spec import BerniniDeploymentSpec
    from bernini.render.rayservice import render_rayservice
    from tests.unit.specs import make_manifest

    spec = BerniniDeploymentSpec.model_validate(
        yaml.safe_load((Path(__file__).parents[2] / "examples" / "bernini-production.yaml").read_text())["spec"])
    rayservice = render_rayservice("bernini-prod", "models", "uid", spec, make_manifest("1.4.0"), "f" * 64)
    pod = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    command = pod["initContainers"][0]["command"]
    assert command[0] == "bernini"
    args = build_parser().parse_args(command[1:])
    assert (args.uri, str(args.dest)) == ("s3://acme-ml-artifacts/bernini/1.4.0/", "/mnt/bernini/artifacts")
    assert pod["securityContext"]["runAsUser"] == 1000 and "USER 1000:100" in (IMAGES / "serving.Dockerfile").read_text()


def test_console_commands_start():
    for command in (["operator", "--help"], ["artifacts", "pull", "--help"], ["compile", "--help"]):
        result = subprocess.run([sys.executable, "-m", "bernini", *command], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
