"""The platform team's policy against specs: what each rule lets through and what it refuses."""

import pytest

from bernini.reconcile.policy import Policy, _endpoint_under
from tests.unit.specs import make_spec


def _violations(policy: Policy, **spec) -> list[str]:
    return policy.violations(make_spec(**spec))


def test_the_default_policy_refuses_only_plain_http_endpoints_and_a_huge_replica_total():
    assert _violations(Policy()) == []
    assert _violations(Policy(), s3={"endpointUrl": "https://store.internal:9000"}) == []
    assert _violations(Policy(), s3={"endpointUrl": "http://store.internal:9000"}) == [
        "spec.s3.endpointUrl http://store.internal:9000 must use https"]
    assert _violations(Policy(allow_http_endpoints=True), s3={"endpointUrl": "http://store.internal:9000"}) == []
    too_many = {name: {"maxReplicas": 100} for name in ("encoder", "diffusion", "decoder")}
    assert _violations(Policy(), stages=too_many, layout="staged") == [
        "maxReplicas add up to 308 over the stages and the ingress; the limit is 256"]
    # Only the layout's deployments count: fused leaves the per-stage entries unused.
    assert _violations(Policy(), stages=too_many) == []
    assert _violations(Policy(), stages={"fused": {"maxReplicas": 300}}) == [
        "maxReplicas add up to 308 over the stages and the ingress; the limit is 256"]


@pytest.mark.parametrize("image, allowed", [
    ("registry.example.com/team/serving:1", True),
    ("registry.example.com/team/sub/serving:1", True),
    ("registry.example.com/team-evil/serving:1", False),
    ("registry.example.com/teamx:1", False),
    ("docker.io/library/serving:1", False),
])
def test_image_prefixes_end_at_a_path_boundary(image, allowed):
    policy = Policy(image_prefixes=("registry.example.com/team",))
    assert (_violations(policy, runtime={"image": image}) == []) is allowed


def test_an_image_may_be_required_to_be_pinned_by_digest():
    policy = Policy(require_image_digest=True)
    assert "must be pinned by digest" in _violations(policy, runtime={"image": "serving:1"})[0]
    assert _violations(policy, runtime={"image": "serving@sha256:" + "a" * 64}) == []


@pytest.mark.parametrize("uri, allowed", [
    ("s3://models/bernini/1.0.0/", True),
    ("s3://models/bernini", True),
    ("s3://models/bernini-evil/1.0.0/", False),
    ("s3://models-evil/bernini/1.0.0/", False),
    ("s3://models/bernini/../other/", False),
])
def test_artifacts_prefixes_end_at_a_folder_boundary_and_refuse_dot_segments(uri, allowed):
    policy = Policy(artifacts_prefixes=("s3://models/bernini/",))
    assert (_violations(policy, model={"artifactsUri": uri}) == []) is allowed


@pytest.mark.parametrize("endpoint, allowed", [
    ("https://s3.internal", True),
    ("https://s3.internal/tenant-a", False),  # path-style: a path picks another bucket
    ("https://s3.internal.example.com", False),
    ("https://s3.internal:8443", False),
    ("https://evil.example/https://s3.internal", False),
])
def test_endpoints_match_scheme_host_and_port_exactly(endpoint, allowed):
    policy = Policy(endpoints=("https://s3.internal",))
    assert (_violations(policy, s3={"endpointUrl": endpoint}) == []) is allowed


@pytest.mark.parametrize("endpoint, allowed", [
    ("https://s3.internal/store", True),
    ("https://S3.INTERNAL/store/", True),  # the host is compared as a name, not as text
    ("https://s3.internal/store/tenant-a", False),  # path-style: the next segment is another bucket
    ("https://s3.internal/store-evil", False),
    ("https://s3.internal/store/../other", False),  # dot segments: a store or proxy may resolve them
    ("https://s3.internal/store/%2e%2e/other", False),  # the same, percent-encoded
    ("https://s3.internal/", False),
])
def test_allowed_endpoint_paths_must_be_equal_plain_paths(endpoint, allowed):
    assert _endpoint_under(endpoint, "https://s3.internal/store") is allowed


@pytest.mark.parametrize("endpoint, allowed", [
    ("https://s3.us-east-1.amazonaws.com", True),
    ("https://s3.eu-west-1.amazonaws.com/", True),
    ("https://secret-bucket.s3.us-east-1.amazonaws.com", False),  # a bucket's own virtual host
    ("https://s3.us-east-1.amazonaws.com/secret-bucket", False),  # path-style: another bucket
    ("https://abc.execute-api.us-east-1.amazonaws.com", False),  # a tenant's own API on an AWS name
    ("https://s3.amazonaws.com", False),
    ("https://s3.us-east-1.amazonaws.com.evil.example", False),
    ("http://s3.us-east-1.amazonaws.com", False),  # the scheme is part of what is allowed
    ("https://s3.us-east-1.amazonaws.com:8443", False),
    ("https://s3.10.0.0.1", False),
])
def test_a_wildcard_label_stands_for_one_label_of_a_name(endpoint, allowed):
    assert _endpoint_under(endpoint, "https://s3.*.amazonaws.com") is allowed


def test_service_accounts_may_be_limited_to_named_ones():
    policy = Policy(service_accounts=("bernini-serving",))
    assert _violations(policy, serviceAccountName="bernini-serving") == []
    assert _violations(policy) == []  # unset: the namespace's default ServiceAccount
    assert _violations(policy, serviceAccountName="namespace-admin") == [
        "spec.serviceAccountName namespace-admin is not allowed (bernini-serving)"]


def test_every_violation_is_reported_at_once():
    policy = Policy(image_prefixes=("ecr/",), artifacts_prefixes=("s3://models/",), service_accounts=("a",))
    found = _violations(policy, serviceAccountName="b")
    assert [v.split(" ", 1)[0] for v in found] == ["spec.runtime.image", "spec.model.artifactsUri", "spec.serviceAccountName"]
