"""The upgrade strategy KubeRay gets and the accelerator pod budget of an incremental upgrade
(render/upgrade.py)."""

import pytest

from bernini.render.capacity import plan
from bernini.render.upgrade import Budget, budget, new_cluster_bounds, pending_bounds, serving_bounds, upgrade_strategy
from tests.unit.specs import make_spec

INCREMENTAL = {"type": "Incremental", "incremental": {"gatewayClassName": "traefik"}}
# Two inf2.xlarge pods at minReplicas (one 2-core fused replica each), at most four; one m6i.xlarge CPU group.
TWO_PODS = {"fused": {"accelerators": 2, "minReplicas": 2, "maxReplicas": 4}}


def spec(**overrides):
    return make_spec(**{"stages": TWO_PODS, **overrides})


def test_newcluster_is_passed_through_and_keeps_the_plans_bounds():
    chosen = spec()
    capacity = plan(chosen)
    assert upgrade_strategy(chosen, None) == {"type": "NewCluster"}
    planned = {"inf2-xlarge": (2, 4), "m6i-xlarge": (1, 4)}
    assert serving_bounds(chosen, capacity) == new_cluster_bounds(chosen, capacity, None) == planned


def test_incremental_defaults_follow_the_deployments_size():
    two = spec(upgradeStrategy=INCREMENTAL)
    assert budget(two, plan(two)) == budget(two, plan(two), serving_pods=1) == Budget(pods=2, surge=1, percent=50)
    # Serve's downscale delay (300 s) + the autoscaler's idle timeout (300 s) + a worker's start (60 s).
    assert upgrade_strategy(two, budget(two, plan(two))) == {
        "type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
            "gatewayClassName": "traefik", "maxSurgePercent": 50, "stepSizePercent": 50, "intervalSeconds": 660}}
    # Grown to ten pods under load: each step is still one pod's worth.
    assert budget(two, plan(two), serving_pods=10) == Budget(pods=10, surge=1, percent=10)
    one = make_spec(upgradeStrategy=INCREMENTAL)  # one pod at minReplicas: a step is the whole pod
    assert budget(one, plan(one)) == Budget(pods=1, surge=1, percent=100)
    chosen = spec(upgradeStrategy={**INCREMENTAL, "incremental": {
        "gatewayClassName": "gw", "maxSurgePercent": 20, "stepSizePercent": 10, "intervalSeconds": 5}})
    assert upgrade_strategy(chosen, budget(chosen, plan(chosen)))["clusterUpgradeOptions"] == {
        "gatewayClassName": "gw", "maxSurgePercent": 20, "stepSizePercent": 10, "intervalSeconds": 5}
    # 20% of two pods is 0.4 of a pod: still one, or the new cluster could never start a replica; of ten, two.
    assert (budget(chosen, plan(chosen)).surge, budget(chosen, plan(chosen), 10).surge) == (1, 2)


def test_the_surge_holds_one_replica_of_every_deployment():
    """Staged: the three neural stages take a NeuronCore each, two inf2.xlarge pods even at one replica each. A
    new cluster capped below that could start nothing, and KubeRay would wait for it forever."""
    staged = make_spec(layout="staged", upgradeStrategy=INCREMENTAL)
    chosen = budget(staged, plan(staged))
    assert chosen == Budget(pods=2, surge=2, percent=100)
    assert new_cluster_bounds(staged, plan(staged), chosen)["inf2-xlarge"] == (0, 2)


def test_incremental_counts_the_accelerator_groups_only_and_starts_a_new_cluster_at_its_surge():
    chosen = spec(upgradeStrategy=INCREMENTAL)
    capacity = plan(chosen)
    assert serving_bounds(chosen, capacity) == {"inf2-xlarge": (0, 4), "m6i-xlarge": (1, 4)}
    assert new_cluster_bounds(chosen, capacity, budget(chosen, capacity)) == {"inf2-xlarge": (0, 1), "m6i-xlarge": (1, 4)}


def test_the_room_is_offered_to_every_group_and_no_group_is_held_below_its_pods():
    chosen = spec(upgradeStrategy=INCREMENTAL, accelerator={"instanceTypes": ["inf2.xlarge", "inf2.8xlarge"]})
    capacity = plan(chosen)
    two = budget(chosen, capacity)
    # A stage may fit only the second type: the surge is offered to both.
    assert pending_bounds(chosen, capacity, two, 2, {}) == {"inf2-xlarge": (0, 1), "inf2-8xlarge": (0, 1)}
    # One group took it: none is left for the other, and neither falls below what it has.
    assert pending_bounds(chosen, capacity, two, 2, {"inf2.8xlarge": 1}) == {"inf2-xlarge": (0, 0), "inf2-8xlarge": (0, 1)}
    # Someone scaled a group up by hand beyond the budget: it keeps its pods.
    assert pending_bounds(chosen, capacity, two, 2, {"inf2.8xlarge": 3}) == {"inf2-xlarge": (0, 0), "inf2-8xlarge": (0, 3)}
    # The old cluster ran another type (a spec that changed instance types): its pods count all the same.
    assert pending_bounds(chosen, capacity, two, 2, {"g5.xlarge": 0}) == {"inf2-xlarge": (0, 1), "inf2-8xlarge": (0, 1)}


@pytest.mark.parametrize("old_pods", [1, 2, 3, 10])
def test_an_upgrade_never_asks_more_than_the_old_pods_plus_the_surge_and_always_completes(old_pods):
    """The worst case: the new cluster's autoscaler asks every pod its bounds allow at once, and the old cluster
    gives one back only when the new one has grown (KubeRay moves capacity in that order)."""
    chosen = spec(upgradeStrategy=INCREMENTAL, stages={"fused": {"accelerators": 2, "minReplicas": 2, "maxReplicas": 12}})
    capacity = plan(chosen)
    held = budget(chosen, capacity, old_pods)
    assert held.surge == 1, "the derived surge is one pod whatever the size"
    active, pending = old_pods, 0
    while active:
        pending = pending_bounds(chosen, capacity, held, active, {"inf2.xlarge": pending})["inf2-xlarge"][1]
        assert active + pending <= held.pods + held.surge and pending >= 1
        active -= 1
    pending = pending_bounds(chosen, capacity, held, 0, {"inf2.xlarge": pending})["inf2-xlarge"][1]
    assert pending == held.pods + 1, "with the old cluster gone the new one may hold the baseline and the surge"


@pytest.mark.parametrize("strategy, message", [
    ({"type": "Incremental"}, "incremental is set exactly when type is Incremental"),
    ({"type": "NewCluster", "incremental": {"gatewayClassName": "traefik"}}, "incremental is set exactly when"),
    ({"type": "Incremental", "incremental": {"gatewayClassName": "gw", "maxSurgePercent": 10, "stepSizePercent": 20}},
     "stepSizePercent must not exceed maxSurgePercent"),
])
def test_the_operator_refuses_what_the_crd_refuses(strategy, message):
    """For an object an older CRD admitted: the model holds the CRD's rules too."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        spec(upgradeStrategy=strategy)


@pytest.mark.parametrize("old_pods", [1, 4, 12])
def test_the_production_example_upgraded_incrementally_stays_within_its_budget(old_pods):
    """examples/bernini-production.yaml with the Incremental strategy, its serving cluster at rest or grown by
    the autoscaler, under the same worst case."""
    from pathlib import Path

    import yaml

    from bernini.api.spec import BerniniDeploymentSpec

    example = Path(__file__).parents[2] / "examples" / "bernini-production.yaml"
    body = next(doc for doc in yaml.safe_load_all(example.read_text()) if doc and doc["kind"] == "BerniniDeployment")
    chosen = BerniniDeploymentSpec.model_validate({**body["spec"], "upgradeStrategy": INCREMENTAL})
    capacity = plan(chosen)
    held = budget(chosen, capacity, old_pods)
    assert held.pods == old_pods and held.surge == 1
    active, pending = old_pods, {}
    while active:
        bounds = pending_bounds(chosen, capacity, held, active, pending)
        pending = {"inf2.xlarge": bounds["inf2-xlarge"][1]}  # the autoscaler takes all it may, in the first type
        assert active + sum(pending.values()) <= old_pods + 1
        active -= 1
