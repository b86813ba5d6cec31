"""A BerniniDeployment Ready end to end: the operator renders, the real KubeRay operator deploys the
serveConfigV2 onto a local Ray head standing in for the head pod, and a request gets a mesh.

Stand-ins, named: the Ray head runs on this machine instead of in the (KWOK) head pod, and one
EndpointSlice for the Serve Service (Kubernetes refuses the loopback pod IPs KWOK assigns here)."""

import json
import urllib.request

import pytest
import yaml

from bernini.api import GROUP, PLURAL, VERSION
from localdev import kuberay_bridge
from tests.conftest import EXAMPLE, SERVE_URI
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_a_bernini_deployment_turns_ready_end_to_end(local_cluster, operator, custom, core, namespace, local_s3,
                                                    artifacts_dir):
    if local_cluster is None:
        pytest.fail("needs the local control plane (it restarts KubeRay); unset BERNINI_TEST_KUBECONFIG to run it")
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["model"].update(artifactsUri=SERVE_URI, target="cpu")
    body["spec"]["s3"] = {"region": "us-east-1", "endpointUrl": local_s3.endpoint_url}
    body["spec"].pop("serviceAccountName")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_for(lambda: [p for p in core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=head").items
                      if p.status.phase == "Running"], "the head pod", timeout=90)

    head = kuberay_bridge.start_head_for(local_cluster, namespace, "bernini", artifacts_dir)
    try:
        kuberay_bridge.wait_serve_running(local_cluster, namespace, "bernini")
        kuberay_bridge.stand_in_serve_endpoints(local_cluster, namespace, "bernini")

        def ready():
            current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini")
            conditions = {c["type"]: c for c in current.get("status", {}).get("conditions", [])}
            return conditions.get("Ready", {}).get("status") == "True" and current

        current = wait_for(ready, "Ready=True on the BerniniDeployment", timeout=120)
        assert current["status"]["rayService"]["ready"] == "True"
        assert current["status"]["rayService"]["activeCluster"]
        request = urllib.request.Request(f"http://127.0.0.1:{kuberay_bridge.SERVE_PORT}/?format=obj",
                                         data=json.dumps({"prompt": "a vase"}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            assert json.loads(response.headers["X-Bernini-Mesh"])["faces"] > 100
    finally:
        head.stop()
