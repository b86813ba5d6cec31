"""examples/argocd/health.lua run by a real Lua interpreter (lupa) against status fixtures."""

from pathlib import Path

import pytest
import yaml
from lupa import LuaRuntime

EXAMPLES = Path(__file__).parents[2] / "examples" / "argocd"
LUA = (EXAMPLES / "health.lua").read_text()
APPLICATION_LUA = (EXAMPLES / "application-health.lua").read_text()


def health(obj: dict, script: str = LUA) -> dict:
    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    result = lua.execute(f"return (function(obj)\n{script}\nend)(...)", to_lua(obj))
    return {"status": result["status"], "message": result["message"]}


def deployment(generation=2, observed=2, **conditions) -> dict:
    listed = [{"type": t, "status": s, "reason": r, "message": m} for t, (s, r, m) in conditions.items()]
    return {"metadata": {"generation": generation}, "status": {"observedGeneration": observed, "conditions": listed}}


VERIFIED = ("True", "Verified", "ok")
RENDERED = ("True", "Applied", "ok")


@pytest.mark.parametrize("obj, expected", [
    ({"metadata": {"generation": 1}}, "Progressing"),
    (deployment(generation=3, observed=2, Ready=("True", "Serving", "ok")), "Progressing"),
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=("True", "Serving", "serving")), "Healthy"),
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=("False", "Suspended", "suspended")), "Suspended"),
    (deployment(ArtifactsVerified=("False", "ManifestNotFound", "gone"), Ready=("False", "ManifestNotFound", "gone")), "Degraded"),
    (deployment(ArtifactsVerified=VERIFIED, Rendered=("False", "StageDoesNotFit", "too big"), Ready=("False", "StageDoesNotFit", "x")), "Degraded"),
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=("False", "RayServiceNotReady", "Initializing")), "Progressing"),
    # A stuck upgrade: the old version serves (Ready), the new cluster's puller exits 4.
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, PodsHealthy=("False", "InitContainerFailed", "exited 4"),
                Ready=("True", "Serving", "serving; the next cluster is not starting")), "Degraded"),
])
def test_health_follows_conditions_and_generation(obj, expected):
    assert health(obj)["status"] == expected


def test_degraded_names_the_reason():
    obj = deployment(ArtifactsVerified=("False", "AccessDenied", "check the IAM role"), Ready=("False", "AccessDenied", ""))
    assert health(obj)["message"] == "AccessDenied: check the IAM role"


def test_argocd_cm_snippet_carries_the_same_lua():
    snippet = yaml.safe_load((EXAMPLES / "argocd-cm-health.yaml").read_text())
    assert snippet["data"]["resource.customizations.health.bernini.dev_BerniniDeployment"] == LUA
    assert snippet["data"]["resource.customizations.health.argoproj.io_Application"] == APPLICATION_LUA


def application(sync=None, health=None, message=None) -> dict:
    status = {}
    if sync:
        status["sync"] = {"status": sync}
    if health:
        status["health"] = {"status": health, **({"message": message} if message else {})}
    return {"status": status}


@pytest.mark.parametrize("obj, expected", [
    ({}, "Progressing"),
    (application(sync="OutOfSync", health="Healthy"), "Progressing"),  # a wave must not pass an unsynced child
    (application(sync="Synced", health="Healthy"), "Healthy"),
    (application(sync="Synced", health="Degraded", message="AccessDenied: x"), "Degraded"),
    (application(sync="Synced", health="Suspended"), "Suspended"),
])
def test_application_health_waits_for_sync_and_passes_the_child_health_on(obj, expected):
    assert health(obj, APPLICATION_LUA)["status"] == expected


def test_applications_sync_crds_then_operator_then_models():
    applications = list(yaml.safe_load_all((EXAMPLES / "applications.yaml").read_text()))
    waves = [int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in applications]
    assert [a["metadata"]["name"] for a in applications] == ["bernini-crds", "bernini-operator", "bernini-model"]
    assert waves == sorted(waves)
    assert "ServerSideApply=true" in applications[0]["spec"]["syncPolicy"]["syncOptions"]
