"""Fixtures for the Serve tests: compiled artifacts pulled through S3, a real Ray head, and the
serveConfigV2 the operator's renderer produces for examples/bernini-minimal.yaml."""

from pathlib import Path

import pytest
import yaml

from bernini.api.spec import BerniniDeploymentSpec
from bernini.artifacts.publish import publish
from bernini.artifacts.pull import Puller
from bernini.compile import compile_model
from bernini.render.rayservice import render_rayservice
from bernini.localcluster.ray_head import RayHead, localize_serve_config

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
    """The operator's serveConfigV2 for the example (cpu-compiled artifacts), localized for this machine."""
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
    return localize_serve_config(yaml.safe_load(rayservice["spec"]["serveConfigV2"]), artifacts_dir, serve_port)
