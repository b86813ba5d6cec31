"""Fixtures for the Serve tests: compiled artifacts pulled through S3, a real Ray head, and the
serveConfigV2 the operator's renderer produces for examples/bernini-minimal.yaml."""

import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.publish import publish
from bernini.artifacts.pull import Puller
from bernini.compile import compile_model
from bernini.render.rayservice import render_rayservice
from tests.serve.ray_head import RayHead

EXAMPLE = Path(__file__).parents[2] / "examples" / "bernini-minimal.yaml"
URI = "s3://artifacts/serve/1.0.0/"


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory, s3, local_s3, monkeypatch_session):
    """compile (cpu target) -> publish -> pull: the path an inf2 worker's init container takes."""
    compiled = tmp_path_factory.mktemp("compiled")
    manifest = compile_model(compiled, "1.0.0", "cpu", log=lambda _: None)
    if "artifacts" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="artifacts")
    publish(s3, URI, compiled, manifest)
    for name, value in local_s3.credentials_env.items():
        monkeypatch_session.setenv(name, value)
    pulled = tmp_path_factory.mktemp("pulled")
    Puller(URI, pulled, endpoint_url=local_s3.endpoint_url, log=lambda _: None).pull()
    return pulled


@pytest.fixture(scope="session")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    head = RayHead(Path("/tmp") / f"ray-{root.name}", root / "ray.log")  # Ray's socket paths must stay short
    head.start()
    yield head
    head.stop()


def rendered_serve_config(artifacts_dir: Path, serve_port: int, **spec_changes) -> dict:
    """The operator's serveConfigV2 for the example, with two local substitutions: the artifacts path
    (pods mount /mnt/bernini/artifacts) and the HTTP port (KubeRay's pods own 8000)."""
    from bernini.artifacts.preflight import judge
    from bernini.serve.stages import load_manifest

    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["model"]["target"] = "cpu"
    for key, value in spec_changes.items():
        body["spec"][key] = value
    spec = BerniniDeploymentSpec.model_validate(body["spec"])
    verdict = judge(spec, load_manifest(artifacts_dir), "0" * 64)
    assert verdict.ok, verdict.message
    rayservice = render_rayservice("bernini", "default", "uid", spec, verdict.manifest, "0" * 64)
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    config["http_options"]["port"] = serve_port
    config["http_options"]["host"] = "127.0.0.1"
    config["applications"][0]["args"]["artifacts_dir"] = str(artifacts_dir)
    return config


def deploy(head: RayHead, config: dict) -> None:
    """PUT /api/serve/applications/: the very call KubeRay makes for serveConfigV2."""
    with urllib.request.urlopen(head.request("/api/serve/applications/", "PUT", json.dumps(config).encode()), timeout=60) as response:
        assert response.status == 200


def serve_details(head: RayHead) -> dict:
    with urllib.request.urlopen(head.request("/api/serve/applications/"), timeout=10) as response:
        return json.loads(response.read())


def running_replicas(head: RayHead, deployment: str) -> int:
    application = serve_details(head).get("applications", {}).get("bernini", {})
    replicas = application.get("deployments", {}).get(deployment, {}).get("replicas", [])
    return sum(replica.get("state") == "RUNNING" for replica in replicas)


def wait_running(head: RayHead, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        application = serve_details(head).get("applications", {}).get("bernini", {})
        status = application.get("status")
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise AssertionError(f"Serve could not deploy the rendered config: {application.get('message')}")
        time.sleep(1)
    raise AssertionError(f"the application did not reach RUNNING within {timeout}s (last: {status})")
