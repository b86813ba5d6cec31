"""The platform team's policy, set on the operator's command line as the chart sets it: a spec outside it is
reported and never rolled out, a running RayService is left alone, and a refused endpoint is never dialled."""

import copy
import urllib.parse

import pytest

from bernini.api import GROUP, PLURAL, VERSION
from localdev.waiting import wait_for
from tests.integration.helpers import _condition, _create, _events, _get, _rayservice
from tests.operator_process import OperatorProcess
from tests.tcp_gate import GatedForwarder

pytestmark = pytest.mark.cluster


def _policy_operator(kubeconfig, local_s3, namespace, log, *args, http_store=True):
    return OperatorProcess(kubeconfig, local_s3.credentials_env, log, namespaces=(namespace,), extra_args=args,
                           http_store=http_store)


@pytest.fixture
def strict_operator(kubeconfig, bernini_crd, local_s3, namespace, tmp_path, example_deployment):
    image = example_deployment(publish=False)["spec"]["runtime"]["image"]
    with OperatorProcess.paused():
        process = _policy_operator(
            kubeconfig, local_s3, namespace, tmp_path / "operator.log",
            f"--allowed-image-prefix={image.rsplit(':', 1)[0]}", f"--allowed-artifacts-prefix=s3://artifacts/{namespace}/",
            "--allowed-service-account=bernini-serving", "--max-total-replicas=20")
        process.start()
        try:
            yield process
        finally:
            process.stop()


DENIED = {
    "image": ({"runtime": {"image": "registry.example.com/elsewhere/serving:1"}}, "spec.runtime.image"),
    "artifacts": ({"model": {"artifactsUri": "s3://artifacts/another-team/1.0.0/"}}, "spec.model.artifactsUri"),
    "account": ({"serviceAccountName": "namespace-admin"}, "spec.serviceAccountName namespace-admin is not allowed"),
    "replicas": ({"stages": {"fused": {"maxReplicas": 30}}}, "maxReplicas add up to"),
}


def test_specs_outside_the_policy_are_denied_naming_the_field(strict_operator, custom, core, namespace, example_deployment):
    template = example_deployment()
    _create(custom, namespace, template)  # inside the policy: the control
    for name, (change, _) in DENIED.items():
        body = copy.deepcopy(template)
        body["metadata"]["name"] = name
        for key, value in change.items():
            body["spec"][key] = {**body["spec"].get(key, {}), **value} if isinstance(value, dict) else value
        _create(custom, namespace, body)
    wait_for(lambda: _condition(_get(custom, namespace), "Rendered").get("status") == "True", "the control Rendered")
    for name, (_, message) in DENIED.items():
        ready = wait_for(lambda: (c := _condition(_get(custom, namespace, name), "Ready")).get("reason") == "PolicyDenied"
                         and c, f"{name}: Ready=False/PolicyDenied")
        assert message in ready["message"], ready["message"]
        assert _rayservice(custom, namespace, name) is None
    events = wait_for(lambda: len(found := _events(core, namespace, "PolicyDenied")) >= len(DENIED) and found, "events")
    assert {event.type for event in events} == {"Warning"}


def test_an_edit_outside_the_policy_leaves_the_running_rayservice_alone(strict_operator, custom, namespace, example_deployment):
    _create(custom, namespace, example_deployment())
    wait_for(lambda: _condition(_get(custom, namespace), "Rendered").get("status") == "True", "Rendered")
    before = _rayservice(custom, namespace)
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini",
                                          {"spec": {"runtime": {"image": "registry.example.com/elsewhere/serving:2"}}})
    wait_for(lambda: _condition(_get(custom, namespace), "Ready").get("reason") == "PolicyDenied", "PolicyDenied")
    assert _condition(_get(custom, namespace), "Rendered")["reason"] == "BlockedByPreflight"
    after = _rayservice(custom, namespace)
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]


def test_by_default_a_plain_http_endpoint_is_denied_and_never_dialled(kubeconfig, bernini_crd, local_s3, custom, namespace,
                                                                       tmp_path, example_deployment):
    store = urllib.parse.urlsplit(local_s3.endpoint_url)
    gate = GatedForwarder((store.hostname, store.port))
    body = example_deployment()
    body["spec"]["s3"]["endpointUrl"] = f"http://127.0.0.1:{gate.port}"
    with OperatorProcess.paused():
        process = _policy_operator(kubeconfig, local_s3, namespace, tmp_path / "operator.log", http_store=False)
        process.start()
        try:
            _create(custom, namespace, body)
            ready = wait_for(lambda: (c := _condition(_get(custom, namespace), "Ready")).get("reason") == "PolicyDenied"
                             and c, "Ready=False/PolicyDenied")
        finally:
            process.stop()
            gate.close()
    assert "must use https" in ready["message"]
    assert process.process.pid not in gate.dialers, "the operator dialled an endpoint the policy refuses"
