"""examples/argocd/health.lua and application-health.lua run by a real Lua interpreter (lupa) against status
fixtures, malformed ones included: neither script may fail on any object."""

import copy
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
    (deployment(ArtifactsVerified=VERIFIED, Rendered=("False", "UpgradeAbandoned", "given back"),
                Ready=("False", "UpgradeAbandoned", "given back")), "Degraded"),
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=("False", "RayServiceNotReady", "Initializing")), "Progressing"),
    # A stuck upgrade: the old version serves (Ready), the new cluster's puller exits 4.
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, PodsHealthy=("False", "InitContainerFailed", "exited 4"),
                Ready=("True", "Serving", "serving; the next cluster is not starting")), "Degraded"),
])
def test_health_follows_conditions_and_generation(obj, expected):
    assert health(obj)["status"] == expected


SERVING = ("True", "Serving", "serving")
WAITING = ("False", "RayServiceNotReady", "Initializing: waiting for the Serve applications")


def with_stages(obj: dict, *statuses: str) -> dict:
    obj["status"]["stages"] = [{"name": f"Stage{i}", "status": status, "minReplicas": 1, "maxReplicas": 2,
                                "message": "replica constructor raised"} for i, status in enumerate(statuses)]
    return obj


@pytest.mark.parametrize("obj, expected", [
    # An invalid spec (an older CRD admitted it): Ready is the only condition the operator writes.
    (deployment(Ready=("False", "InvalidSpec", "spec.stages: too many")), "Degraded"),
    (deployment(Ready=("False", "PolicyDenied", "image not allowed")), "Degraded"),
    # A pod's failure named in Ready before (or without) PodsHealthy.
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=("False", "ContainerFailed", "exited 1")), "Degraded"),
    (deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, RayServiceReady=("False", "Initializing", "x"),
                Ready=WAITING), "Progressing"),
    # Ray Serve could not deploy a stage: the RayService never turns Ready, and the stage says why.
    (with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=WAITING), "HEALTHY", "DEPLOY_FAILED"),
     "Degraded"),
    (with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=WAITING), "UNHEALTHY"), "Degraded"),
    # An in-place Serve update that failed while the old replicas serve: the rollout is stuck.
    (with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=SERVING), "UNHEALTHY"), "Degraded"),
    (with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=WAITING), "UPDATING", "UPSCALING"),
     "Progressing"),
    (with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=SERVING), "HEALTHY", "DOWNSCALING"),
     "Healthy"),
], ids=["invalid spec", "policy denied", "pod failed", "KubeRay initializing", "Serve deploy failed",
        "Serve stage unhealthy", "in-place update failed", "Serve updating", "Serve healthy"])
def test_a_failed_deploy_is_degraded_and_only_waiting_is_progressing(obj, expected):
    assert health(obj)["status"] == expected


def test_a_failed_serve_stage_is_named():
    obj = with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=WAITING), "HEALTHY", "DEPLOY_FAILED")
    assert health(obj)["message"] == "Ray Serve deployment Stage1 is DEPLOY_FAILED: replica constructor raised"


def without(obj: dict, *path) -> dict:
    obj = copy.deepcopy(obj)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return obj


FAILED = deployment(ArtifactsVerified=("False", "AccessDenied", "check the IAM role"), Ready=("False", "AccessDenied", "x"))


@pytest.mark.parametrize("obj, expected", [
    (without(FAILED, "status", "conditions", 0, "message"), ("Degraded", "AccessDenied: ")),
    (without(FAILED, "status", "conditions", 0, "reason"), ("Degraded", ": check the IAM role")),
    (without(without(FAILED, "status", "conditions", 0, "reason"), "status", "conditions", 0, "message"), ("Degraded", ": ")),
    (without(FAILED, "status", "conditions", 0, "status"), ("Degraded", "AccessDenied: x")),  # then Ready says it
    (without(FAILED, "status", "conditions", 1, "type"), ("Degraded", "AccessDenied: check the IAM role")),
    (without(deployment(Ready=("False", "Suspended", "")), "status", "conditions", 0, "message"), ("Suspended", "")),
    (without(deployment(Ready=SERVING), "status", "conditions", 0, "message"), ("Healthy", "")),
    (without(deployment(Ready=WAITING), "status", "conditions", 0, "message"), ("Progressing", "RayServiceNotReady: ")),
    (without(FAILED, "status", "conditions"), ("Progressing", "Waiting for the operator")),
    (without(FAILED, "status"), ("Progressing", "Waiting for the operator")),
    (without(FAILED, "status", "observedGeneration"), ("Progressing", "The operator has not acted on the latest spec yet")),
    (without(FAILED, "metadata"), ("Progressing", "The operator has not acted on the latest spec yet")),
    (without(with_stages(deployment(Ready=SERVING), "UNHEALTHY"), "status", "stages", 0, "message"),
     ("Degraded", "Ray Serve deployment Stage0 is UNHEALTHY: ")),
])
def test_a_missing_field_never_makes_the_script_fail(obj, expected):
    assert tuple(health(obj).values()) == expected


HOSTILE_VALUES = [None, "", "x", 0, 3.5, True, [], {}, ["x", 1], {"type": "Ready"}]


def _paths(value, path=()):
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def _replaced(value, path, new):
    value = copy.deepcopy(value)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return value


@pytest.mark.parametrize("script, obj", [
    (LUA, with_stages(deployment(ArtifactsVerified=VERIFIED, Rendered=RENDERED, Ready=WAITING), "UNHEALTHY")),
    (APPLICATION_LUA, {"status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Healthy", "message": "m"},
                                  "operationState": {"phase": "Failed", "message": "m"}}}),
], ids=["BerniniDeployment", "Application"])
def test_any_json_shaped_object_gets_a_health_and_never_an_error(script, obj):
    hostile = [_replaced(obj, path, new) for path in _paths(obj) if path for new in HOSTILE_VALUES]  # obj: a table
    for each in hostile:
        result = health(each, script)
        assert result["status"] in ("Healthy", "Progressing", "Degraded", "Suspended"), each
        assert isinstance(result["message"], str), each


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


def failed_sync(phase: str, message: str | None = "one or more objects failed to apply") -> dict:
    obj = application(sync="OutOfSync", health="Missing")
    obj["status"]["operationState"] = {"phase": phase, **({"message": message} if message else {})}
    return obj


@pytest.mark.parametrize("obj, expected", [
    (failed_sync("Failed"), ("Degraded", "Sync Failed: one or more objects failed to apply")),
    (failed_sync("Error", None), ("Degraded", "Sync Error: ")),
    (failed_sync("Running"), ("Progressing", "Sync status OutOfSync")),  # a retry under way
    ({"status": {"sync": {}, "health": {}}}, ("Progressing", "Sync status unknown")),
    ({"status": {"sync": {"status": "Synced"}, "health": {}}}, ("Progressing", "Waiting for the Application's health")),
    (application(sync="Synced", health="Degraded"), ("Degraded", "")),
    ({"status": "x"}, ("Progressing", "Waiting for the Application to sync")),
])
def test_application_health_shows_a_failed_sync_and_never_fails_on_a_missing_field(obj, expected):
    assert tuple(health(obj, APPLICATION_LUA).values()) == expected


def test_applications_sync_crds_then_operator_then_models():
    applications = list(yaml.safe_load_all((EXAMPLES / "applications.yaml").read_text()))
    waves = [int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in applications]
    assert [a["metadata"]["name"] for a in applications] == ["bernini-crds", "bernini-operator", "bernini-model"]
    assert waves == sorted(waves)
    assert "ServerSideApply=true" in applications[0]["spec"]["syncPolicy"]["syncOptions"]
