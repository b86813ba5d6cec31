"""A BerniniDeployment from `kubectl apply` to a mesh, every step inside real pods."""

import json
import time

import pytest

from bernini.api import GROUP, PLURAL, VERSION
from tests.realnodes import helpers
from tests.realnodes.conftest import small_spec
from localdev.waiting import wait_for

pytestmark = pytest.mark.realnodes


def test_apply_to_mesh_on_real_pods(real_cluster, real_operator, real_core, real_custom, serving_namespace, node_s3,
                                    published_versions):
    namespace = serving_namespace
    started = time.monotonic()
    real_custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, small_spec(real_cluster, node_s3))

    body = wait_for(lambda: helpers.ready(real_custom, namespace), "Ready=True on the BerniniDeployment", timeout=600,
                    interval=2)
    print(f"\napply -> Ready: {time.monotonic() - started:.1f}s")
    assert body["status"]["modelVersion"] == "1.0.0"

    # Head on the CPU node, the worker on an inf2 node with all its NeuronCores.
    head = helpers.pods(real_core, namespace, "ray.io/node-type=head")[0]
    assert head.spec.node_name == "real-cpu-1"
    assert head.spec.automount_service_account_token is True  # the autoscaler sidecar's token
    workers = helpers.pods(real_core, namespace, "ray.io/node-type=worker")
    assert workers and all(p.spec.node_name.startswith("real-inf2-") for p in workers)
    worker = workers[0]
    assert worker.spec.containers[0].resources.limits["aws.amazon.com/neuroncore"] == "2"

    # The init container pulled from the S3 server and verified every file before Ray started.
    puller = next(s for s in worker.status.init_container_statuses if s.name == "pull-artifacts")
    assert puller.state.terminated.exit_code == 0
    log = real_core.read_namespaced_pod_log(worker.metadata.name, namespace, container="pull-artifacts")
    assert "checksums verified" in log, log

    # Ray workers joined with token auth and the neuron_cores resource.
    raycluster = body["status"]["rayService"]["activeCluster"]
    token = helpers.ray_token(real_core, namespace, raycluster)
    status, _ = helpers.dashboard(real_core, namespace, raycluster, "/api/version", token=None)
    assert status in (401, 403), f"the dashboard answered {status} without the Ray token"
    status, payload = helpers.dashboard(real_core, namespace, raycluster, "/api/v0/nodes?detail=true", token=token)
    assert status == 200, payload[:300]
    nodes = helpers.find_key(json.loads(payload), "resources_total")
    assert any(resources.get("neuron_cores") == 2 for resources in nodes), nodes

    # A request through the cluster's own Serve Service returns a mesh (kube-proxy may need a sync period
    # to program the endpoints KubeRay counted).
    status, headers, mesh = wait_for(lambda: helpers.answer(real_core, namespace), "a mesh from bernini-serve-svc",
                                     timeout=180, interval=2)
    assert status == 200, mesh[:500]
    info = json.loads(headers["x-bernini-mesh"])
    assert info["faces"] > 100 and mesh[:4] == b"glTF"
    print(f"apply -> first mesh: {time.monotonic() - started:.1f}s ({info['vertices']} vertices)")
