"""examples/argocd applied as a user applies it (the app of apps in root-application.yaml), synced by a real
Argo CD from local git repositories into an empty KWOK control plane. KWOK's pods run no containers, so the
chart's operator Deployment is only scheduled (it counts as available) and the model's Ray cluster never
serves: the model must stay Progressing for that reason. The operator that acts on the model is the test's
process; tests/realnodes/test_gitops.py runs the whole tree on real containers."""

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from localdev.argocd import MODEL_NAMESPACE, ExampleRepositories, state
from localdev.cluster import ClusterError
from localdev.placeholder_artifacts import publish_placeholder_artifacts
from localdev.stack import platform_repository
from localdev.waiting import wait_for
from tests.gitops.conftest import apply
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[2]
URI = "s3://artifacts/gitops/1.0.0/"


def model_objects(endpoint_url: str) -> list[dict]:
    """What the platform team's repository holds: the serving ServiceAccount and a BerniniDeployment."""
    deployment = yaml.safe_load((REPO / "examples" / "bernini-minimal.yaml").read_text())
    deployment["spec"]["model"].update(version="1.0.0", artifactsUri=URI)
    deployment["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": endpoint_url}
    return platform_repository(deployment)


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_the_example_applications_sync_in_wave_order_and_the_model_waits_for_its_ray_cluster(
        empty_cluster, argocd, s3, local_s3, tmp_path):
    publish_placeholder_artifacts(s3, URI, "1.0.0")
    repositories = ExampleRepositories.create(tmp_path / "git", model_objects(local_s3.endpoint_url))
    apply(empty_cluster, repositories.root_application())
    started = time.monotonic()

    def synced(name: str) -> dict | None:
        try:
            application = argocd.application(name)
        except ClusterError:  # not created yet: its wave has not come
            return None
        finished = application.get("status", {}).get("operationState", {}).get("phase") in ("Succeeded", "Failed", "Error")
        return application if finished and state(application)[0] == "Synced" else None

    model = wait_for(lambda: synced("bernini-model"), "the model's Application to sync", timeout=180,
                     explain=lambda: json.dumps([a["status"] for a in argocd.applications()], indent=1)[-4000:])
    print(f"\nroot Application applied -> the model's Application synced in {time.monotonic() - started:.1f}s")
    crds, operator = argocd.application("bernini-crds"), argocd.application("bernini-operator")

    timeline = {name: (app["metadata"]["creationTimestamp"], app["status"]["operationState"]["finishedAt"])
                for name, app in (("crds", crds), ("operator", operator), ("model", model))}
    # Waves: each Application is created only after the previous wave finished syncing and turned Healthy.
    assert timestamp(timeline["operator"][0]) >= timestamp(timeline["crds"][1]), timeline
    assert timestamp(timeline["model"][0]) >= timestamp(timeline["operator"][1]), timeline
    assert state(crds)[:2] == ("Synced", "Healthy") and state(operator)[:2] == ("Synced", "Healthy"), (
        state(crds), state(operator))
    # So the model's first sync found its CRD: one attempt, no "could not find kind BerniniDeployment".
    operation = model["status"]["operationState"]
    assert (operation["phase"], operation.get("retryCount", 0)) == ("Succeeded", 0), operation
    rendered = json.loads(empty_cluster.kubectl("get", "deployment", "-n", "bernini-system", "-o", "json"))["items"]
    assert [d["metadata"]["name"] for d in rendered] == ["bernini-operator"]

    # No operator has acted yet (the chart's pod is KWOK's): Argo CD's health comes from the installed Lua.
    assert state(model)[1:] == ("Progressing", "Waiting for the operator")

    operator_process = OperatorProcess(empty_cluster.kubeconfig, local_s3.credentials_env, tmp_path / "operator.log")
    operator_process.start()
    started = time.monotonic()
    try:
        def acted_on() -> tuple | None:
            deployment = json.loads(empty_cluster.kubectl("get", "berninideployment", "-n", MODEL_NAMESPACE, "bernini",
                                                          "-o", "json"))
            conditions = {c["type"]: c for c in deployment.get("status", {}).get("conditions", [])}
            current = state(argocd.application("bernini-model"))
            ready = conditions.get("Ready", {})
            expected = f"{ready.get('reason')}: {ready.get('message')}"
            return (conditions, current) if ready and current[2] == expected else None

        conditions, current = wait_for(acted_on, "Argo CD to report the operator's Ready reason", timeout=120)
    finally:
        operator_process.stop()
    print(f"operator started -> Argo CD reports its Ready reason in {time.monotonic() - started:.1f}s: {current[2]}")
    assert conditions["ArtifactsVerified"]["status"] == "True" and conditions["Rendered"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] != "Suspended"
    assert current[:2] == ("Synced", "Progressing")
    # The operator's RayService is not in git, and Argo CD does not call it drift.
    root = argocd.application("bernini")
    assert state(root)[0] == "Synced"
