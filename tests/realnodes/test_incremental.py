"""An incremental upgrade on real pods: the new version's cluster grows within its surge budget while Traefik
shifts traffic to it through the Gateway KubeRay makes, under steady load and with no failed request."""

import time

import pytest

from bernini.api import GROUP, PLURAL, VERSION
from localdev.nodelayer import GATEWAY_CLASS
from localdev.waiting import wait_for
from tests.realnodes import helpers
from tests.realnodes.conftest import VERSIONS, artifacts_uri, publish_with_a_stage_that_does_not_load, small_spec
from tests.realnodes.helpers import ACCELERATED_WORKERS

pytestmark = pytest.mark.realnodes

STEADY_PODS = 2  # two fused replicas at minReplicas, one inf2.xlarge worker pod each
SURGE_PODS = 1  # the derived maxSurgePercent (50) of two pods


def _answers(address: str) -> bool:
    try:
        return helpers.post(address, 120, "obj")[0] == 200
    except OSError:  # until Traefik has programmed the route and kube-proxy its Service
        return False


def _upgrade_state(core, custom, namespace) -> str:
    status = helpers.rayservice(custom, namespace).get("status", {})
    sides = {side: {key: status.get(side, {}).get(key) for key in
                    ("rayClusterName", "targetCapacity", "trafficRoutedPercent")}
             for side in ("activeServiceStatus", "pendingServiceStatus")}
    pods = [f"{p.metadata.name} {p.status.phase}" for p in helpers.pods(core, namespace, ACCELERATED_WORKERS)]
    return f"{sides}\nconditions: {status.get('conditions')}\naccelerator pods: {pods}"


@pytest.fixture(scope="module")
def endpoint(real_cluster, real_operator, real_core, real_custom, serving_namespace, node_s3, published_versions):
    """The local spec with two fused replicas at rest and the incremental strategy; the address its status gives."""
    namespace = serving_namespace
    body = small_spec(real_cluster, node_s3)
    body["spec"]["stages"]["fused"].update(minReplicas=STEADY_PODS, maxReplicas=STEADY_PODS)
    body["spec"]["upgradeStrategy"] = {"type": "Incremental",
                                       "incremental": {"gatewayClassName": GATEWAY_CLASS, "intervalSeconds": 10}}
    real_custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    ready = wait_for(lambda: (b := helpers.ready(real_custom, namespace)) and b["status"].get("serveEndpoint") and b,
                     "Ready=True and the Gateway's address in status", timeout=600, interval=2)
    address = ready["status"]["serveEndpoint"]
    gateway = real_custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "gateways",
                                                       "bernini-gateway")
    assert address == f"http://{gateway['status']['addresses'][0]['value']}"
    assert address == f"http://{helpers.cluster_ip(real_core, 'gateway-system', 'traefik')}", "Traefik's Service"
    wait_for(lambda: _answers(address), "a mesh through the Gateway", timeout=180, interval=2)
    wait_for(lambda: len(helpers.pods(real_core, namespace, ACCELERATED_WORKERS)) == STEADY_PODS,
             "two accelerator workers at rest", timeout=300, interval=2)
    yield address
    real_custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini")


def test_an_incremental_upgrade_stays_within_its_surge_budget_with_no_failed_request(
        endpoint, real_core, real_custom, serving_namespace):
    namespace = serving_namespace
    old_cluster = helpers.deployment(real_custom, namespace)["status"]["rayService"]["activeCluster"]
    load = helpers.Load(lambda: helpers.post(endpoint, 120, "obj"))
    peak = helpers.PodPeak(real_core, real_custom, namespace)
    load.start()
    peak.start()
    time.sleep(5)  # a few requests on the old version alone
    started = time.monotonic()
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", {"spec": {"model": {
        "version": VERSIONS[1], "artifactsUri": artifacts_uri(VERSIONS[1])}}})

    def switched():
        active = helpers.rayservice(real_custom, namespace).get("status", {}).get("activeServiceStatus", {})
        return active.get("rayClusterName") not in (None, old_cluster) and active["rayClusterName"]

    try:
        new_cluster = wait_for(switched, "KubeRay to move all traffic and promote the new cluster", timeout=900,
                               interval=1, explain=lambda: _upgrade_state(real_core, real_custom, namespace))
        switch_seconds = time.monotonic() - started
        time.sleep(5)  # a few requests on the new version alone
    finally:
        results = load.stop()
        asked, existing = peak.stop()
    during = [(status, version) for at, status, version in results if at >= started]
    print(f"\nincremental upgrade: all traffic on the new cluster {switch_seconds:.1f}s after the patch; "
          f"{len(during)} requests, {len(load.failures)} failed; accelerator pods at most {asked} asked, "
          f"{existing} existing (steady {STEADY_PODS})")
    assert during and not load.failures, load.failures
    assert asked <= STEADY_PODS + SURGE_PODS, f"the clusters asked {asked} accelerator pods together"
    assert existing <= STEADY_PODS + SURGE_PODS, f"{existing} accelerator pods existed at once"
    versions = [version for status, version in during]
    assert versions[-1] == VERSIONS[1] and VERSIONS[0] in versions, "traffic moved from the old to the new version"
    # Both versions answered during the shift: traffic moved by weight, not at one instant.
    assert helpers.deployment(real_custom, namespace)["status"]["rayService"]["activeCluster"] == new_cluster
    wait_for(lambda: helpers.ready(real_custom, namespace) and helpers.deployment(real_custom, namespace)[
        "status"]["modelVersion"] == VERSIONS[1], "status.modelVersion to name the new version", timeout=120)


def test_a_version_whose_replicas_crash_on_start_is_given_back_at_its_deadline_within_the_budget(
        endpoint, real_core, real_custom, serving_namespace, node_s3_client, tmp_path):
    """Incremental: every check passes, but the new version's Serve replicas raise as they load; past the
    deadline KubeRay's own rollback takes the new cluster back and deletes it, while the old version serves."""
    namespace, broken, deadline = serving_namespace, "1.2.0-crash", 90
    publish_with_a_stage_that_does_not_load(node_s3_client, broken, tmp_path / "compiled")
    before = helpers.deployment(real_custom, namespace)
    serving_cluster, serving_spec = before["status"]["rayService"]["activeCluster"], before["spec"]
    serving_version = before["status"]["modelVersion"]
    load = helpers.Load(lambda: helpers.post(endpoint, 120, "obj"))
    peak = helpers.PodPeak(real_core, real_custom, namespace)
    load.start()
    peak.start()
    started = time.monotonic()
    helpers.patch_version_with_deadline(real_custom, namespace, broken, artifacts_uri(broken), deadline)

    try:
        abandoned = wait_for(lambda: helpers.deployment(real_custom, namespace)["status"].get("abandonedUpgrade"),
                             "the upgrade to be given back", timeout=deadline + 300, interval=1,
                             explain=lambda: _upgrade_state(real_core, real_custom, namespace))
        abandoned_seconds = time.monotonic() - started
        wait_for(lambda: helpers.raycluster_names(real_custom, namespace) == [serving_cluster], "KubeRay to roll back and delete the new cluster",
                 timeout=400, interval=2, explain=lambda: _upgrade_state(real_core, real_custom, namespace))
        gone_seconds = time.monotonic() - started
        time.sleep(5)
    finally:
        results = load.stop()
        asked, existing = peak.stop()
    print(f"\ngiven back (incremental): {abandoned_seconds:.1f}s after the patch (deadline {deadline}s), its "
          f"cluster gone at {gone_seconds:.1f}s; {len(results)} requests, {len(load.failures)} failed; "
          f"accelerator pods at most {asked} asked, {existing} existing (steady {STEADY_PODS})")
    assert abandoned["modelVersion"] == broken and "Serve application" in abandoned["message"], abandoned
    assert abandoned_seconds >= deadline
    assert results and not load.failures, load.failures
    assert {version for _, _, version in results} == {serving_version}
    assert asked <= STEADY_PODS + SURGE_PODS and existing <= STEADY_PODS + SURGE_PODS, (asked, existing)
    body = helpers.deployment(real_custom, namespace)
    assert body["status"]["modelVersion"] == serving_version
    assert helpers.condition(body, "Ready")["reason"] == "UpgradeAbandoned"
    real_custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini", {"spec": {
        "model": serving_spec["model"], "upgradeStrategy": serving_spec["upgradeStrategy"]}})
    wait_for(lambda: helpers.ready(real_custom, namespace), "Ready=True on the serving version", timeout=120)
    assert helpers.raycluster_names(real_custom, namespace) == [serving_cluster]
