"""Giving back an upgrade at its deadline: the record of the serving spec, and what goes back to KubeRay."""

import base64
import json
import zlib

import yaml

from bernini.api.kuberay import RayServiceStatus
from bernini.api.reasons import Cause
from bernini.domain.pipeline import APPLICATION_IMPORT_PATH
from bernini.render import rollback
from bernini.render.serve_config import REPLICA_ENV

SPEC = {"upgradeStrategy": {"type": "NewCluster"}, "serveConfigV2": "applications: []\n",
        "rayClusterConfig": {"rayVersion": "2.52.0", "workerGroupSpecs": [{"groupName": "inf2-xlarge"}]}}


def test_the_record_reads_back_as_the_same_spec_and_is_the_same_for_the_same_spec():
    record = rollback.encode(SPEC)
    assert rollback.decode(record) == SPEC
    assert rollback.encode(json.loads(json.dumps(SPEC, sort_keys=False))) == record, "key order changes nothing"
    assert len(record) < len(json.dumps(SPEC)) * 2


def test_a_record_that_is_not_ours_reads_as_none():
    bomb = base64.b64encode(zlib.compress(b'{"rayClusterConfig": {}, "x": "' + b"a" * (10 << 20) + b'"}')).decode()
    for record in ("", "not base64!", base64.b64encode(b"plain").decode(), rollback.encode({"no": "cluster"}),
                   rollback.encode([1, 2]), "A" * (rollback.MAX_RECORD_CHARS + 4), bomb):
        assert rollback.decode(record) is None, record[:40]


def rayservice(generation: int, observed: int | None, active: str, pending: str = "", upgrading: str = "False") -> dict:
    status = {"activeServiceStatus": {"rayClusterName": active}, "pendingServiceStatus": {"rayClusterName": pending},
              "conditions": [{"type": "UpgradeInProgress", "status": upgrading}]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"generation": generation}, "spec": SPEC, "status": status}


def test_a_rayservice_is_settled_only_once_kuberay_acted_on_its_generation_with_nothing_pending():
    assert rollback.settled(rayservice(3, 3, "a"))
    assert not rollback.settled(rayservice(3, 2, "a")), "KubeRay has not read the latest spec"
    assert not rollback.settled(rayservice(3, 3, "a", "b")), "an upgrade is under way"
    assert not rollback.settled(rayservice(3, 3, "")), "nothing serves yet"
    assert not rollback.settled(rayservice(3, 3, "a", upgrading="True")), "KubeRay has not finished with it"
    assert not rollback.settled(rayservice(3, None, "a")) and not rollback.settled(None)
    assert not rollback.settled({"metadata": {"generation": 1}, "status": "garbage"})


def test_the_rollback_takes_only_the_checked_fields_from_the_record_and_the_rest_from_the_live_spec():
    metadata = {"name": "b", "namespace": "n"}
    forged = {**SPEC, "serveService": {"spec": {"type": "LoadBalancer"}}, "excludeHeadPodFromServeSvc": False}
    live = {"upgradeStrategy": {"type": "NewCluster"}, "serveConfigV2": "new", "rayClusterConfig": {"new": 1},
            "excludeHeadPodFromServeSvc": True}
    rayservice = rollback.rollback_rayservice(metadata, forged, live, {"type": "None"})
    assert rayservice["metadata"] == metadata and rayservice["kind"] == "RayService"
    assert rayservice["spec"] == {"upgradeStrategy": {"type": "None"}, "serveConfigV2": SPEC["serveConfigV2"],
                                  "rayClusterConfig": SPEC["rayClusterConfig"], "excludeHeadPodFromServeSvc": True}
    assert SPEC["upgradeStrategy"] == {"type": "NewCluster"}, "the record itself is not changed"


def serve_config(**application) -> str:
    return yaml.safe_dump({"applications": [{"name": "bernini", "import_path": APPLICATION_IMPORT_PATH,
                                             "runtime_env": {"env_vars": REPLICA_ENV}, **application}]})


def test_a_record_runs_only_if_the_serving_cluster_runs_it_and_it_serves_our_application_alone():
    recorded = {**SPEC, "serveConfigV2": serve_config()}
    cluster = {"spec": json.loads(json.dumps(SPEC["rayClusterConfig"]))}
    assert rollback.runs(recorded, cluster)
    # What the autoscaler, our bounds and Kueue-like controllers change on a running cluster is left out.
    cluster["spec"]["workerGroupSpecs"][0].update(replicas=3, minReplicas=0, maxReplicas=9,
                                                  scaleStrategy={"workersToDelete": ["w-1"]})
    cluster["spec"]["workerGroupSpecs"][0]["template"] = {"spec": {"tolerations": [{"key": "k"}]}}
    recorded["rayClusterConfig"]["workerGroupSpecs"][0]["template"] = {"spec": {}}
    assert rollback.runs(recorded, cluster)
    assert not rollback.runs({**recorded, "rayClusterConfig": {**SPEC["rayClusterConfig"], "rayVersion": "9"}}, cluster)
    one_of_ours = dict(REPLICA_ENV.items())
    one_of_ours[next(iter(one_of_ours))] = "1"
    for foreign in (serve_config(import_path="evil:app"), serve_config(runtime_env={"pip": ["evil"]}),
                    serve_config(runtime_env={"env_vars": {"LD_PRELOAD": "/x.so"}}),
                    serve_config(runtime_env={"env_vars": one_of_ours}),
                    serve_config(deployments=[{"name": "Fused", "ray_actor_options": {"runtime_env": {"pip": ["x"]}}}]),
                    serve_config(args={"artifacts_dir": "/etc"}), serve_config(working_dir="s3://x/y.zip"),
                    "applications: []", "{", "", 7):
        assert not rollback.runs({**recorded, "serveConfigV2": foreign}, cluster), foreign
    assert not rollback.runs(recorded, None) and not rollback.runs(recorded, {"spec": "x"})
    changed = {**recorded, "rayClusterConfig": {**SPEC["rayClusterConfig"], "rayVersion": "9"}}
    assert rollback.mismatch(changed, cluster) == \
        "the recorded spec differs from the serving RayCluster's at /rayVersion"
    assert rollback.mismatch(None, cluster) == "status holds no readable record of the serving spec"
    # KubeRay writes the RayCluster from its Go types: quantities in canonical form are the same spec.
    sized = {"resources": {"limits": {"memory": "5120Mi", "cpu": "0.5"}}}
    canonical = {"resources": {"limits": {"memory": "5Gi", "cpu": "500m"}}}
    recorded["rayClusterConfig"]["workerGroupSpecs"][0]["template"] = {"spec": {"containers": [sized]}}
    cluster["spec"]["workerGroupSpecs"][0]["template"] = {"spec": {"containers": [canonical]}}
    assert rollback.runs(recorded, cluster)
    canonical["resources"]["limits"]["memory"] = "6Gi"
    assert "/containers/0/resources/limits/memory" in rollback.mismatch(recorded, cluster)
    canonical["resources"]["limits"]["memory"] = "5Gi"
    sized["env"], canonical["env"] = [{"name": "N", "value": "1000m"}], [{"name": "N", "value": "1"}]
    assert "/env/0/value" in rollback.mismatch(recorded, cluster), "only a resource or a size is a quantity"
    broken = {**recorded, "rayClusterConfig": {"workerGroupSpecs": 5, "headGroupSpec": {"template": "x"}}}
    assert rollback.mismatch(broken, cluster) == "the recorded spec does not read as a RayCluster's"


def test_the_deadline_runs_from_the_pending_clusters_first_sight():
    assert rollback.seconds_left("2026-12-05T10:00:00Z", 600, "2026-12-05T10:09:00Z") == 60
    assert rollback.seconds_left("2026-12-05T10:00:00Z", 600, "2026-12-05T10:10:30Z") == -30
    assert rollback.parses("2026-12-05T10:00:00Z")
    assert not any(map(rollback.parses, (None, "", "soon", "2026-12-05T10:00:00", 7)))


def test_why_a_cluster_did_not_serve_is_its_pods_reason_else_what_serve_said():
    stuck = RayServiceStatus.model_validate({"pendingServiceStatus": {"rayClusterName": "b", "applicationStatuses": {
        "bernini": {"status": "DEPLOY_FAILED", "message": "RuntimeError: PytorchStreamReader failed"}}}})
    assert rollback.why_not_serving(Cause("InitContainerFailed", "sha256 mismatch"), stuck) == \
        "InitContainerFailed: sha256 mismatch"
    assert rollback.why_not_serving(None, stuck) == \
        "Serve application bernini is DEPLOY_FAILED: RuntimeError: PytorchStreamReader failed"
    assert rollback.why_not_serving(None, RayServiceStatus()) == "its Serve applications never became ready"
    assert not rollback.serving_share(stuck)
    assert rollback.serving_share(RayServiceStatus.model_validate(
        {"pendingServiceStatus": {"rayClusterName": "b", "trafficRoutedPercent": 10}}))
