"""Writes the API server refuses, and writes that must not happen: each becomes a condition and an Event, the
operator backs off and recovers on its own, and nothing of someone else's is taken over or brought back."""

import asyncio
import copy
import logging
import os
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from bernini.api import GROUP, PLURAL, VERSION
from bernini.artifacts.preflight import ManifestReader
from bernini.reconcile.controller import Controller
from bernini.reconcile.policy import Policy
from bernini.reconcile.kube import RAY_GROUP, RAY_PLURAL, RAY_VERSION, Kube
from localdev.waiting import wait_for
from tests.operator_process import OperatorProcess
from tests.integration.helpers import _condition, _create, _events, _get, _rayservice

pytestmark = pytest.mark.cluster

LOCAL_STORE = Policy(allow_http_endpoints=True)  # versitygw on plain http over loopback
DENIAL = "RayServices in this namespace need the platform team's approval"
FOREIGN_SPEC = {"serveConfigV2": "applications: []\n", "rayClusterConfig": {"headGroupSpec": {
    "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "other:1"}]}}}}}


def _denying(api_client, namespace: str, api_group: str, resource: str):
    """A real ValidatingAdmissionPolicy (admission in the API server itself) refusing creates and updates of
    resource here; calling the value lifts it."""
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"deny-{resource}-{namespace}"
    admission.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": [api_group], "apiVersions": ["*"],
                                                         "operations": ["CREATE", "UPDATE"], "resources": [resource]}]},
                 "validations": [{"expression": "false", "message": DENIAL}]},
    })
    admission.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    })

    def lift():
        for delete in (admission.delete_validating_admission_policy_binding, admission.delete_validating_admission_policy):
            try:
                delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise
    return lift


@pytest.fixture
def denying_policy(api_client, namespace):
    lift = _denying(api_client, namespace, RAY_GROUP, RAY_PLURAL)
    yield lift
    lift()


def test_an_apply_admission_refuses_is_a_condition_and_an_event_until_it_is_allowed(
        scoped_operator, denying_policy, custom, core, namespace, example_deployment):
    # The policy takes effect once the API server's informer has it: probe with a throwaway create.
    probe = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "probe"}, "spec": FOREIGN_SPEC}
    wait_for(lambda: _refused(custom, namespace, probe), "the admission policy to take effect", timeout=30)
    _create(custom, namespace, example_deployment())
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "Rendered").get("reason") == "ApplyRefused" and c,
                       "Rendered=False/ApplyRefused")
    assert DENIAL in _condition(current, "Rendered")["message"]
    assert (_condition(current, "Ready")["status"], _condition(current, "Ready")["reason"]) == ("False", "ApplyRefused")
    assert current["status"]["observedGeneration"] == current["metadata"]["generation"]
    assert _condition(current, "ArtifactsVerified")["status"] == "True"
    event = wait_for(lambda: _events(core, namespace, "ApplyRefused"), "an ApplyRefused event")[0]
    assert event.type == "Warning" and DENIAL in event.message
    assert _rayservice(custom, namespace) is None
    assert "Traceback" not in scoped_operator.log(), "a refusal is not a crash"

    denying_policy()  # no event reaches the operator: only its back-off notices
    wait_for(lambda: _condition(_get(custom, namespace), "Rendered").get("status") == "True",
             "Rendered=True once the policy is gone", timeout=90)
    assert _rayservice(custom, namespace) is not None


def _refused(custom, namespace, body) -> bool:
    try:
        custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, copy.deepcopy(body))
    except ApiException as error:
        return error.status in (400, 403, 422) and DENIAL in error.body
    custom.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, body["metadata"]["name"])
    return False


@pytest.fixture
def without_rayservice_crd(api_client, custom, namespace):
    """KubeRay's RayService CRD removed for the test (as on a cluster where KubeRay is not installed yet);
    calling the fixture's value installs it again, and so does the teardown."""
    extensions = client.ApiextensionsV1Api(api_client)
    name = f"{RAY_PLURAL}.{RAY_GROUP}"
    saved = extensions.read_custom_resource_definition(name)
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": name, "annotations": saved.metadata.annotations},
           "spec": api_client.sanitize_for_serialization(saved.spec)}
    extensions.delete_custom_resource_definition(name)
    wait_for(lambda: _absent(extensions, name), "the RayService CRD to be gone", timeout=60)

    def install():
        if _absent(extensions, name):
            extensions.create_custom_resource_definition(crd)
        wait_for(lambda: any(c.type == "Established" and c.status == "True"
                             for c in extensions.read_custom_resource_definition(name).status.conditions or []),
                 "the RayService CRD to be Established")
        wait_for(lambda: _served(custom, namespace), "RayServices to be served again")
    yield install
    install()


def _absent(extensions, name) -> bool:
    try:
        extensions.read_custom_resource_definition(name)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _served(custom, namespace) -> bool:
    try:
        custom.list_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def test_without_kuberay_the_deployment_says_so_and_converges_once_it_is_installed(
        without_rayservice_crd, scoped_operator, custom, core, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    current = wait_for(lambda: _condition(c := _get(custom, namespace), "Rendered").get("reason") == "RayServiceAPIMissing" and c,
                       "Rendered=False/RayServiceAPIMissing", explain=lambda: scoped_operator.log()[-3000:])
    assert "install KubeRay" in _condition(current, "Rendered")["message"]
    assert _condition(current, "Ready")["reason"] == "RayServiceAPIMissing"
    assert wait_for(lambda: _events(core, namespace, "RayServiceAPIMissing"), "an event")[0].type == "Warning"
    without_rayservice_crd()
    wait_for(lambda: _condition(_get(custom, namespace), "Rendered").get("status") == "True",
             "Rendered=True once KubeRay's CRD is back", timeout=90)
    assert _rayservice(custom, namespace)["metadata"]["ownerReferences"][0]["name"] == "bernini"


class StaleReads(Kube):
    """FAKE read, real writes: the first RayService read answers with what an earlier read saw, as a read
    does when another client changes the object right after it. Every write goes to the real API server."""

    def __init__(self, api, first_answer):
        super().__init__(api)
        self.first_answer = [first_answer]

    def read_rayservice(self, namespace, name):
        return self.first_answer.pop() if self.first_answer else super().read_rayservice(namespace, name)


def _controller(custom, namespace, body, kube, event: str = "ADDED") -> Controller:
    """event: ADDED, an object created while watched (its RayService is created without a read); MODIFIED, one
    known before (read first)."""
    controller = Controller(kube, ManifestReader(), policy=LOCAL_STORE)
    controller.observe_deployment(event, _get(custom, namespace, body["metadata"]["name"]))
    return controller


@pytest.fixture
def in_process_only(local_s3, monkeypatch):
    """The test's own controller is the only one: operator processes are paused (one would re-create what the
    test deletes), and the store's credentials are in this process's environment."""
    for name, value in local_s3.credentials_env.items():
        monkeypatch.setenv(name, value)
    with OperatorProcess.paused():
        yield


def test_a_rayservice_created_between_the_read_and_the_create_is_not_taken_over(
        bernini_crd, in_process_only, api_client, custom, core, namespace, example_deployment):
    body = example_deployment()
    _create(custom, namespace, body)
    foreign = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "bernini"}, "spec": FOREIGN_SPEC}
    custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, foreign)
    controller = _controller(custom, namespace, body, StaleReads(api_client, None), event="MODIFIED")
    assert controller.reconcile((namespace, "bernini")) is None
    assert _condition(_get(custom, namespace), "Rendered")["reason"] == "NameConflict"
    after = _rayservice(custom, namespace)
    assert "ownerReferences" not in after["metadata"]
    assert "bernini-operator" not in {field["manager"] for field in after["metadata"]["managedFields"]}


def test_a_new_deployments_rayservice_is_created_without_a_read_and_never_over_one_of_that_name(
        bernini_crd, in_process_only, api_client, custom, core, namespace, example_deployment):
    body = example_deployment()
    _create(custom, namespace, body)
    foreign = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "bernini"}, "spec": FOREIGN_SPEC}
    foreign["spec"] = {"rayClusterConfig": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {
        "containers": [{"name": "their-head", "image": "other:1"}]}}}}}  # no field in common with ours
    custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, foreign)
    controller = _controller(custom, namespace, body, Kube(api_client))  # ADDED while watched: a new object
    assert controller.reconcile((namespace, "bernini")) is None
    assert _condition(_get(custom, namespace), "Rendered")["reason"] == "NameConflict"
    after = _rayservice(custom, namespace)
    assert "ownerReferences" not in after["metadata"]
    assert "bernini-operator" not in {field["manager"] for field in after["metadata"]["managedFields"]}
    custom.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, "bernini")
    wait_for(lambda: _rayservice(custom, namespace) is None, "their RayService to be deleted")
    assert controller.reconcile((namespace, "bernini")) is None
    ours = _rayservice(custom, namespace)
    assert ours["metadata"]["ownerReferences"][0]["uid"] == _get(custom, namespace)["metadata"]["uid"]


def test_fields_our_create_set_are_removed_by_a_later_apply_that_drops_them(api_client, custom, namespace):
    """A create's fields belong to an Update entry, which a later apply cannot take away; own_as_applier
    hands them to the applier first."""
    kube = Kube(api_client)
    spec = {"rayClusterConfig": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {
        "containers": [{"name": "ray-head", "image": "ours:1"}]}}}}}
    for name, handed_over in (("handed-over", True), ("not-handed-over", False)):
        desired = {"apiVersion": "ray.io/v1", "kind": "RayService",
                   "metadata": {"name": name, "namespace": namespace, "labels": {"keep": "1", "drop": "1"}},
                   "spec": spec}
        created = kube.create_rayservice(desired)
        live = kube.read_rayservice(namespace, name)
        if handed_over:
            kube.own_as_applier(live)
            kube.own_as_applier(kube.read_rayservice(namespace, name))  # done once: nothing more to send
        kube.apply_rayservice({**desired, "metadata": {**desired["metadata"], "labels": {"keep": "1"}}},
                              created["metadata"]["uid"])
        labels = kube.read_rayservice(namespace, name)["metadata"]["labels"]
        assert ("drop" in labels) is not handed_over, (name, labels)


def test_a_rayservice_replaced_between_the_read_and_the_update_is_not_taken_over(
        bernini_crd, in_process_only, api_client, custom, core, namespace, example_deployment):
    body = example_deployment()
    _create(custom, namespace, body)
    controller = _controller(custom, namespace, body, Kube(api_client))
    controller.reconcile((namespace, "bernini"))
    ours = _rayservice(custom, namespace)
    assert ours is not None
    custom.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, "bernini")
    wait_for(lambda: _rayservice(custom, namespace) is None, "our RayService to be deleted")
    foreign = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "bernini"}, "spec": FOREIGN_SPEC}
    custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAY_PLURAL, foreign)
    drifted = copy.deepcopy(ours)
    drifted["spec"]["serveConfigV2"] = "drifted"  # so the reconcile wants to apply
    controller = _controller(custom, namespace, body, StaleReads(api_client, drifted))
    controller.rayservices.put((namespace, "bernini"), drifted)
    assert controller.reconcile((namespace, "bernini")) is None
    assert _condition(_get(custom, namespace), "Rendered")["reason"] == "NameConflict"
    after = _rayservice(custom, namespace)
    assert after["spec"]["serveConfigV2"] == FOREIGN_SPEC["serveConfigV2"] and "ownerReferences" not in after["metadata"]


def _workers_until(controller: Controller, key, *steps, timeout: float = 60) -> None:
    """Run the controller's own workers (queue, back-off, error handling) on key until each step() holds in
    turn (one event loop for all: the queue belongs to it)."""
    async def run():
        controller.start()
        controller.queue.add(key)
        try:
            async with asyncio.timeout(timeout):
                for step in steps:
                    while not await asyncio.to_thread(step):
                        await asyncio.sleep(0.2)
        finally:
            await controller.stop()
    asyncio.run(run())


def test_a_refused_status_patch_is_a_warning_event_and_a_retry(
        bernini_crd, in_process_only, api_client, custom, core, namespace, example_deployment, denying_policy):
    """The status itself cannot carry this failure: an Event does, once per run of failures, and the worker's
    back-off writes it once the refusal is lifted (no watch event and no resync in between: resync is an hour)."""
    body = example_deployment()
    _create(custom, namespace, body)
    admission = client.AdmissionregistrationV1Api(api_client)
    policy = admission.read_validating_admission_policy(f"deny-rayservices-{namespace}")
    policy.spec.match_constraints.resource_rules[0].api_groups = [GROUP]
    policy.spec.match_constraints.resource_rules[0].resources = [f"{PLURAL}/status"]
    admission.replace_validating_admission_policy(policy.metadata.name, policy)

    def status_refused() -> bool:  # the policy's change reaches admission a moment later
        try:
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "bernini", {"status": {}})
        except ApiException as error:
            return error.status in (400, 403, 422)
        return False
    wait_for(status_refused, "the policy to refuse status patches", timeout=30)
    controller = _controller(custom, namespace, body, Kube(api_client))
    controller.resync_seconds = 3600
    key = (namespace, "bernini")

    seen = {}

    def refused_twice_then_lifted() -> bool:
        if controller._failures.get(key, 0) < 2:
            return False
        seen["events"] = _events(core, namespace, "StatusRefused")
        denying_policy()
        return True
    _workers_until(controller, key, refused_twice_then_lifted,
                   lambda: bool(_get(custom, namespace).get("status", {}).get("conditions")), timeout=120)
    events = seen["events"]
    assert len(events) == 1 and events[0].type == "Warning" and DENIAL in events[0].message
    assert key not in controller._failures, "the success did not reset the back-off"
    assert len(_events(core, namespace, "StatusRefused")) == 1


class StaleDeployment(Kube):
    """FAKE read, real writes: the BerniniDeployment reads as it was before its namespace began terminating (as a
    cache that has not seen the deletion yet does); every write goes to the real API server."""

    def __init__(self, api, stale):
        super().__init__(api)
        self.stale = stale

    def read_deployment(self, namespace, name):
        return self.stale


def test_a_create_in_a_terminating_namespace_ends_the_reconcile_without_retries(
        bernini_crd, in_process_only, api_client, custom, core, example_deployment, caplog):
    """When a namespace is deleted, the garbage collector may remove the RayService before its
    BerniniDeployment goes; the re-create the operator then tries is refused by the real API server. The
    controller's worker must take that answer as the end of the matter: no error, no back-off."""
    name = f"t-terminating-{os.urandom(3).hex()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    body = example_deployment()
    body["metadata"]["finalizers"] = ["bernini.dev/test-hold"]  # the object outlives the namespace's deletion
    _create(custom, name, body)
    stale = _get(custom, name)
    core.delete_namespace(name)
    key = (name, "bernini")
    try:
        wait_for(lambda: core.read_namespace(name).status.phase == "Terminating", "the namespace to terminate")
        controller = Controller(StaleDeployment(api_client, stale), ManifestReader(), policy=LOCAL_STORE)
        controller.observe_deployment("ADDED", stale)
        successes = _reconciles("success")
        with caplog.at_level(logging.DEBUG, logger="bernini.controller"):
            _workers_until(controller, key, lambda: _reconciles("success") > successes and not controller.queue)
        assert key not in controller._failures, "the refusal was retried"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert "namespace is being deleted" in caplog.text
    finally:
        custom.patch_namespaced_custom_object(GROUP, VERSION, name, PLURAL, "bernini", {"metadata": {"finalizers": None}})


def _reconciles(result: str) -> float:
    return REGISTRY.get_sample_value("bernini_reconcile_total", {"result": result}) or 0.0
