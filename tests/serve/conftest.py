"""Fixtures for the Serve tests: a real Ray head and the serveConfigV2 the operator's renderer produces for
examples/bernini-minimal.yaml (the compiled artifacts come from the root conftest)."""

from pathlib import Path

import pytest
import yaml

from bernini.api.spec import BerniniDeploymentSpec
from bernini.render.rayservice import render_rayservice
from localdev.ray_head import RayHead, localize_serve_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "bernini-minimal.yaml"


# Package scope: the head and its Serve replicas stop after tests/serve, not at the session's end, so they
# never share the two cores with the clusters of the later suites.
@pytest.fixture(scope="package")
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
