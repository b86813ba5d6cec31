"""The Ray head lost under load, with GCS fault tolerance on a real Redis: KubeRay starts a new head that finds
the cluster's state in Redis, no worker pod restarts, and no request fails (the Serve Service leaves the head
out, so none was in flight on it)."""

import time

import pytest

from bernini.api import GROUP, PLURAL, VERSION
from localdev.redis import PASSWORD_KEY, PASSWORD_SECRET
from localdev.waiting import wait_for
from tests.realnodes import helpers
from tests.realnodes.conftest import small_spec

pytestmark = pytest.mark.realnodes


@pytest.fixture(scope="module")
def fault_tolerant(real_cluster, real_operator, real_core, real_custom, serving_namespace, node_s3, node_redis,
                   published_versions) -> str:
    """The local spec with gcsFaultTolerance on the harness's Redis, its password in a Secret; serving."""
    namespace = serving_namespace
    real_core.create_namespaced_secret(namespace, node_redis.secret_manifest(namespace))
    body = small_spec(real_cluster, node_s3)
    body["spec"]["gcsFaultTolerance"] = {"redisAddress": node_redis.address,
                                         "passwordSecret": {"name": PASSWORD_SECRET, "key": PASSWORD_KEY}}
    real_custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(lambda: helpers.ready(real_custom, namespace), "Ready=True", timeout=600, interval=2)
    wait_for(lambda: (helpers.answer(real_core, namespace) or (0,))[0] == 200, "a mesh from bernini-serve-svc",
             timeout=180, interval=2)
    yield namespace
    real_custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini")


def test_losing_the_head_restarts_no_worker_and_fails_no_request(fault_tolerant, real_core, real_custom):
    namespace = fault_tolerant
    [head] = helpers.pods(real_core, namespace, "ray.io/node-type=head")
    assert head.metadata.annotations.get("ray.io/ft-enabled") == "true"
    password = next(e for c in head.spec.containers for e in c.env or [] if e.name == "REDIS_PASSWORD")
    assert password.value is None and password.value_from.secret_key_ref.name == PASSWORD_SECRET, \
        "the password reaches the head from the Secret, never in the pod spec"
    serve_service = real_core.read_namespaced_service("bernini-serve-svc", namespace)
    endpoints = real_core.read_namespaced_endpoints("bernini-serve-svc", namespace)
    addresses = {a.ip for subset in endpoints.subsets or [] for a in subset.addresses or []}
    assert addresses and head.status.pod_ip not in addresses, "the Serve Service leaves the head out"
    assert serve_service.spec.selector.get("ray.io/serve") == "true"
    lost = helpers.head_loss(real_core, real_custom, namespace,
                             lambda: helpers.generate(real_core, namespace, timeout=120, file_format="obj"))
    print(f"\nhead lost: a new head Ready after {lost['head_back']:.1f}s, Serve RUNNING on it after "
          f"{lost['serve_back']:.1f}s; {lost['sent']} requests, {lost['failed']} failed; "
          f"{len(lost['restarted'])} of {lost['workers']} workers restarted")
    assert lost["workers"] >= 2 and lost["restarted"] == [], lost["restarted"]
    assert lost["sent"] and lost["failed"] == 0, lost["failures"]
    body = helpers.deployment(real_custom, namespace)
    assert helpers.condition(body, "Ready")["status"] == "True"
