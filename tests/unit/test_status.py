"""Condition bookkeeping and the status the operator derives from one reconcile."""

import pytest

from bernini.api.kuberay import rayservice_status, worker_pods
from bernini.api.reasons import Cause
from bernini.api.status import AbandonedUpgrade, read_back
from bernini.artifacts.preflight import Preflight

from bernini.reconcile.conditions import MESSAGE_LIMIT, Judgement, Transition, bounded, event_type, merge
from bernini.reconcile.status import Observation, desired_status
from bernini.render import rollback
from bernini.render.capacity import plan
from tests.unit.specs import make_manifest, make_spec

READY_RAYSERVICE = {"metadata": {"name": "bernini"}, "status": {
    "conditions": [{"type": "Ready", "status": "True", "reason": "RunningServeApps"}],
    "activeServiceStatus": {"rayClusterName": "bernini-abcde"},
}}


def test_transition_time_moves_only_when_status_changes():
    first, transitions = merge([], [Judgement("Ready", "False", Cause("Initializing", ""))], 3, "t1")
    assert first[0].last_transition_time == "t1" and first[0].observed_generation == 3
    assert [t.type for t in transitions] == ["Ready"]
    same, transitions = merge(first, [Judgement("Ready", "False", Cause("Initializing", ""))], 4, "t2")
    assert same[0].last_transition_time == "t1" and transitions == []
    reason_only, transitions = merge(same, [Judgement("Ready", "False", Cause("Other", ""))], 4, "t3")
    assert reason_only[0].last_transition_time == "t1" and len(transitions) == 1
    flipped, _ = merge(reason_only, [Judgement("Ready", "True", Cause("Serving", ""))], 4, "t4")
    assert flipped[0].last_transition_time == "t4"


def test_condition_messages_are_bounded_with_a_marker():
    # A manifest with a 40 KB stage name once made a message the API server refuses (32 KiB per condition),
    # and the whole status patch with it.
    huge = "StageMissing: " + "s" * 40_000
    merged, _ = merge([], [Judgement("ArtifactsVerified", "False", Cause("StageMissing", huge))], 1, "t1")
    message = merged[0].message
    assert len(message) <= MESSAGE_LIMIT and message.startswith("StageMissing: sss")
    kept, marker = message.rsplit(" [... ", 1)
    assert marker == f"{len(huge) - len(kept)} more characters cut]"
    assert bounded("short") == "short" and len(bounded("x" * 10**6)) <= MESSAGE_LIMIT


EVENTS = [
    # A new object's first states and waiting states post nothing (a burst of creates stays cheap) ...
    ("ArtifactsVerified", None, "True", "Verified", None),
    ("Ready", None, "False", "Suspended", None),
    ("Ready", None, "False", "RayServiceNotReady", None),
    ("PodsHealthy", "Unknown", "True", "NoFailingPods", None),
    ("Rendered", None, "False", "BlockedByPreflight", None),
    ("RayServiceReady", "False", "True", "RunningServeApps", None),
    # ... failures warn, on first sight too, and so does losing True ...
    ("ArtifactsVerified", None, "False", "ManifestNotFound", "Warning"),
    ("Rendered", "True", "False", "StageDoesNotFit", "Warning"),
    ("PodsHealthy", "True", "False", "InitContainerFailed", "Warning"),
    ("Ready", "True", "False", "RayServiceNotReady", "Warning"),
    # ... and changes between known states are Normal.
    ("Ready", "False", "True", "Serving", "Normal"),
    ("Ready", "True", "False", "Suspended", "Normal"),
    ("ArtifactsVerified", "False", "True", "Verified", "Normal"),
]


@pytest.mark.parametrize("condition, before, status, reason, expected", EVENTS)
def test_which_condition_changes_become_events(condition, before, status, reason, expected):
    assert event_type(Transition(condition, before, Judgement(condition, status, Cause(reason, "")))) == expected


def _status(spec, preflight, rayservice, blocked=None, current=None, serving_version=None):
    seen = Observation(7, preflight, plan(spec), blocked, rayservice_status(rayservice), serving_version)
    return desired_status("bernini", "models", spec, seen, read_back(current), "now")[0]


def _conditions(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def _conditions_messages(status) -> dict[str, str]:
    return {c["type"]: c["message"] for c in status["conditions"]}


def test_ready_only_when_artifacts_verified_and_rayservice_ready():
    spec = make_spec()
    verified = Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64)
    status = _status(spec, verified, READY_RAYSERVICE)
    assert _conditions(status)["Ready"] == ("True", "Serving")
    assert status["rayService"]["activeCluster"] == "bernini-abcde"
    assert status["serveEndpoint"] == "http://bernini-serve-svc.models.svc.cluster.local:8000"
    assert status["observedGeneration"] == 7
    failed = _status(spec, Preflight(False, Cause("ManifestNotFound", "gone")), READY_RAYSERVICE)
    assert _conditions(failed)["Ready"] == ("False", "ManifestNotFound")
    assert _conditions(failed)["Rendered"] == ("False", "BlockedByPreflight")


def test_blocked_update_keeps_reporting_what_runs():
    spec = make_spec(model={"version": "2.0.0"})
    current = {"modelVersion": "1.0.0", "artifacts": {"uri": "s3://bucket/bernini/1.0.0/", "target": "inf2"}}
    status = _status(spec, Preflight(False, Cause("AccessDenied", "denied")), READY_RAYSERVICE, current=current)
    assert status["modelVersion"] == "1.0.0"
    assert status["artifacts"]["uri"].endswith("1.0.0/")
    assert "left as it was" in next(c for c in status["conditions"] if c["type"] == "Rendered")["message"]


def test_suspended_is_not_ready_with_its_own_reason():
    spec = make_spec(suspend=True)
    status = _status(spec, Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64), READY_RAYSERVICE)
    assert _conditions(status)["Ready"] == ("False", "Suspended")


def test_stage_that_does_not_fit_is_a_rendered_condition():
    spec = make_spec()
    status = _status(spec, Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64), None,
                     blocked=Cause("StageDoesNotFit", "diffusion asks 4 NeuronCores"))
    assert _conditions(status)["Rendered"] == ("False", "StageDoesNotFit")
    assert _conditions(status)["RayServiceReady"] == ("Unknown", "NotCreated")


def test_model_version_names_the_active_cluster_only_once_kuberay_switched():
    pending = {"status": {"activeServiceStatus": {"rayClusterName": "old"}, "pendingServiceStatus": {"rayClusterName": "new"}}}
    switched = {"status": {"activeServiceStatus": {"rayClusterName": "new"}}}
    assert rayservice_status(pending).switched_cluster == "" and rayservice_status(switched).switched_cluster == "new"
    spec = make_spec(model={"version": "2.0.0"})
    verified = Preflight(True, Cause("Verified", "ok"), make_manifest("2.0.0"), "f" * 64)
    current = {"modelVersion": "1.0.0"}
    assert _status(spec, verified, READY_RAYSERVICE, current=current)["modelVersion"] == "1.0.0"
    assert _status(spec, verified, READY_RAYSERVICE, current=current, serving_version="2.0.0")["modelVersion"] == "2.0.0"


def _undeclared(document, schema, path="status") -> list[str]:
    """Keys the API server would prune silently: present in the document, absent from the schema."""
    found = []
    if isinstance(document, dict):
        properties = schema.get("properties", {})
        for key, value in document.items():
            if key not in properties:
                found.append(f"{path}.{key}")
            else:
                found += _undeclared(value, properties[key], f"{path}.{key}")
    elif isinstance(document, list):
        for index, item in enumerate(document):
            found += _undeclared(item, schema.get("items", {}), f"{path}[{index}]")
    return found


def test_every_status_the_operator_writes_fits_the_crd_schema_with_nothing_pruned():
    import jsonschema
    import yaml

    from bernini.reconcile.status import invalid_status
    from tests.unit.test_crd import COMMITTED

    crd = yaml.safe_load(COMMITTED[0].read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    spec = make_spec()
    verified = Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64)
    statuses = [
        _status(spec, verified, READY_RAYSERVICE, serving_version="1.0.0"),
        _status(spec, verified, None),
        _status(spec, Preflight(False, Cause("AccessDenied", "denied")), READY_RAYSERVICE, current=_status(spec, verified, READY_RAYSERVICE)),
        _status(spec, verified, READY_RAYSERVICE, blocked=Cause("NameConflict", "taken")),
        desired_status("bernini", "models", spec, Observation(7, verified, plan(spec), None,
                                                              rayservice_status(READY_RAYSERVICE), None,
                                                              Cause("InitContainerFailed", "exited 4")), read_back({}), "now")[0],
        desired_status("bernini", "models", spec, Observation(
            7, verified, plan(spec), None, rayservice_status(UPGRADING), "1.0.0",
            abandoned=AbandonedUpgrade(generation=7, model_version="1.1.0", at="now", message="why"),
            serving_spec=rollback.encode({"rayClusterConfig": {}})), read_back({}), "now")[0],
        invalid_status(read_back(_status(spec, verified, READY_RAYSERVICE)),
                       Observation(8, Preflight(False, Cause("InvalidSpec", "bad")), None, None, None), "now")[0],
    ]
    for status in statuses:
        jsonschema.validate(status, schema)
        assert _undeclared(status, schema) == []
    assert _conditions(statuses[-1])["Ready"] == ("False", "InvalidSpec")
    assert statuses[-1]["capacity"] == statuses[0]["capacity"], "an invalid spec keeps what was observed before"


UPGRADING = {"status": {"activeServiceStatus": {"rayClusterName": "old"},
                        "pendingServiceStatus": {"rayClusterName": "new"}}}


def test_the_deadline_of_an_upgrade_runs_from_the_first_sight_of_its_pending_cluster():
    spec = make_spec()
    verified = Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64)

    def since(rayservice, current, now):
        seen = Observation(7, verified, plan(spec), None, rayservice_status(rayservice))
        return desired_status("b", "m", spec, seen, read_back(current), now)[0]["rayService"].get("pendingSince")

    first = {"rayService": {"pendingCluster": "new", "pendingSince": "2026-12-05T10:00:00Z"}}
    assert since(UPGRADING, {}, "2026-12-05T11:00:00Z") == "2026-12-05T11:00:00Z"
    assert since(UPGRADING, first, "2026-12-05T11:00:00Z") == "2026-12-05T10:00:00Z", "kept over reconciles"
    other = {"rayService": {"pendingCluster": "older", "pendingSince": "2026-12-05T10:00:00Z"}}
    assert since(UPGRADING, other, "2026-12-05T11:00:00Z") == "2026-12-05T11:00:00Z", "a new pending cluster"
    assert since(READY_RAYSERVICE, first, "2026-12-05T11:00:00Z") is None


def test_a_given_back_upgrade_is_not_rendered_nor_ready_and_says_why_and_what_serves():
    spec = make_spec()
    verified = Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64)
    given_back = AbandonedUpgrade(generation=7, model_version="1.1.0", at="2026-12-05T10:30:00Z",
                                  message="InitContainerFailed: sha256 mismatch")
    seen = Observation(7, verified, plan(spec), None, rayservice_status(READY_RAYSERVICE), "1.0.0",
                       abandoned=given_back)
    status = desired_status("b", "m", spec, seen, read_back({}), "now")[0]
    assert _conditions(status)["Rendered"] == _conditions(status)["Ready"] == ("False", "UpgradeAbandoned")
    message = _conditions_messages(status)["Ready"]
    assert "1.1.0" in message and "1800s" in message and "sha256 mismatch" in message and "modelVersion" in message
    assert status["modelVersion"] == "1.0.0" and status["abandonedUpgrade"]["modelVersion"] == "1.1.0"


def test_a_status_read_back_drops_only_the_field_that_no_longer_reads():
    stored = {"modelVersion": "1.0.0", "cost": {"workers": "many"}, "removedField": 1,
              "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t", "reason": "Serving"}]}
    status = read_back(stored)
    assert status.model_version == "1.0.0" and status.cost is None and status.conditions[0].reason == "Serving"
    assert read_back(["not", "an", "object"]) == read_back(None)


def test_rendered_names_the_stage_settings_the_layout_does_not_run():
    manifest = Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64)
    tuned = make_spec(stages={"diffusion": {"maxReplicas": 9}})
    assert _conditions_messages(_status(tuned, manifest, None))["Rendered"].endswith(
        "; stages.diffusion: set, but the fused layout does not run them")
    assert "layout" not in _conditions_messages(_status(make_spec(), manifest, None))["Rendered"]
    staged = make_spec(layout="staged", stages={"fused": {"maxReplicas": 9}, "diffusion": {"maxReplicas": 9}})
    assert "stages.fused: set, but the staged layout" in _conditions_messages(_status(staged, manifest, None))["Rendered"]


def test_worker_pods_are_counted_as_kuberay_counts_them_and_odd_fields_read_as_absent():
    groups = [{"groupName": "inf2-xlarge", "replicas": 5, "minReplicas": 0, "maxReplicas": 2},  # held to max
              {"groupName": "m6i-xlarge", "replicas": 0, "minReplicas": 1, "maxReplicas": 1},  # held to min
              {"groupName": "g5-xlarge", "replicas": 3, "numOfHosts": 2},  # no bound; two hosts a replica
              {"groupName": "g5-2xlarge", "replicas": 2, "suspend": True},
              {"groupName": "odd", "replicas": -3, "minReplicas": "one", "numOfHosts": "two"},  # read as 0, 0, 1
              {"groupName": "no-hosts", "replicas": 2, "numOfHosts": 0},
              {"groupName": "inf2-xlarge", "replicas": 1},  # a second group of one name adds up
              "not a group", {"replicas": 4}]
    assert worker_pods({"spec": {"workerGroupSpecs": groups}}) == {
        "inf2-xlarge": 3, "m6i-xlarge": 1, "g5-xlarge": 6, "g5-2xlarge": 0, "odd": 0, "no-hosts": 0}
    assert worker_pods({"spec": {"suspend": True, "workerGroupSpecs": groups[:1]}}) == {"inf2-xlarge": 0}
    assert worker_pods({"spec": "x"}) == worker_pods({}) == {}


def test_kuberay_fields_we_do_not_read_are_ignored_and_a_malformed_status_reads_as_unwritten():
    added = {"status": {**READY_RAYSERVICE["status"], "newKubeRayField": {"x": 1}, "observedGeneration": 3}}
    assert rayservice_status(added).ready and rayservice_status(added).active_service_status.ray_cluster_name == "bernini-abcde"
    malformed = {"status": {"conditions": "Ready"}}
    assert rayservice_status(malformed).conditions == [] and rayservice_status(None) is None
    # One odd field (anyone who may write the RayService may write its status) hides nothing else.
    odd = {"status": {**READY_RAYSERVICE["status"], "pendingServiceStatus": [], "activeServiceStatus": {
        "rayClusterName": "bernini-abcde", "rayClusterStatus": {"desiredWorkerReplicas": -3},
        "applicationStatuses": {"bernini": {"serveDeploymentStatuses": {"Encoder": {"status": 5}, "Decoder": 1}}}}}}
    read = rayservice_status(odd)
    assert read.ready and read.cluster_names == ["bernini-abcde"]
    # An incremental upgrade's shares read only as percentages.
    shares = {"status": {"pendingServiceStatus": {"rayClusterName": "b", "targetCapacity": 50,
                                                  "trafficRoutedPercent": 150}}}
    pending = rayservice_status(shares).pending_service_status
    assert (pending.ray_cluster_name, pending.target_capacity, pending.traffic_routed_percent) == ("b", 50, None)
    # A reason or status our own condition could not carry reads as none: the status patch must still validate.
    foreign = {"status": {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "not a reason!"}]}}
    spec = make_spec()
    status = _status(spec, Preflight(True, Cause("Verified", "ok"), make_manifest(), "f" * 64), foreign)
    assert _conditions(status)["RayServiceReady"] == ("Unknown", "Unspecified")
