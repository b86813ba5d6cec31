"""What a deployment costs, where users look (status, `kubectl get -o wide`, metrics) with a platform team's
price override, and `bernini status` / `kubectl bernini status` reading it all back, against the real control
plane and KubeRay. KWOK nodes run no Ray head, so KubeRay reports no Serve stages here (tests/realnodes do)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from localdev.waiting import wait_for
from tests.integration.helpers import _create, _get
from tests.operator_process import OperatorProcess

BIN = Path(sys.executable).parent


def _run(command: list[str], kubeconfig: Path, local_cluster) -> str:
    kubectl_dir = Path(local_cluster.binary("kubectl")).parent
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{kubectl_dir}:{os.environ['PATH']}"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_price_override_reaches_status_metrics_and_the_wide_listing_and_bernini_status_shows_it(
        kubeconfig, local_cluster, bernini_crd, local_s3, namespace, core, custom, example_deployment, tmp_path):
    if local_cluster is None:
        pytest.fail("this test runs kubectl and kubectl plugins from the local control plane's build")
    prices = tmp_path / "prices.yaml"
    prices.write_text("source: negotiated (test)\nasOf: '2026-11-27'\ndollarsPerHour:\n  inf2.xlarge: 0.5\n"
                      "  m6i.xlarge: 0.25\n")
    price = {"inf2.xlarge": 0.5, "m6i.xlarge": 0.25}
    with OperatorProcess.paused():
        process = OperatorProcess(kubeconfig, local_s3.credentials_env, tmp_path / "operator.log",
                                  namespaces=(namespace,), extra_args=(f"--prices={prices}",))
        process.start()
        try:
            _create(custom, namespace, example_deployment())
            body = wait_for(lambda: (b := _get(custom, namespace)).get("status", {}).get("cost") and b, "status.cost")
            cost, capacity = body["status"]["cost"], body["status"]["capacity"]
            assert cost["priceSource"].startswith("negotiated (test); other types: AWS") and cost["pricesAsOf"] == "2026-11-27"
            groups = {g["instanceType"]: g for g in capacity["workerGroups"]}  # the fused stages' inf2, the CPU group
            assert set(groups) == set(price)
            assert (cost["minDollarsPerHour"], cost["maxDollarsPerHour"]) == tuple(
                sum(price[name] * group[bound] for name, group in groups.items()) for bound in ("minReplicas", "maxReplicas"))
            entries = {entry["instanceType"]: entry for entry in cost["instanceTypes"]}
            assert set(entries) == set(price) and cost["workers"] >= capacity["minWorkers"]
            assert all(entry["dollarsPerHour"] == price[name] * entry["workers"] for name, entry in entries.items())
            assert cost["currentDollarsPerHour"] == sum(entry["dollarsPerHour"] for entry in entries.values())
            samples = process.metrics()  # the exposition sorts labels by name
            for name, entry in entries.items():
                assert samples[f'bernini_cost_dollars_per_hour{{instance_type="{name}",name="bernini",'
                               f'namespace="{namespace}"}}'] == entry["dollarsPerHour"]
            assert samples[f'bernini_deployment_ready{{name="bernini",namespace="{namespace}"}}'] == 0  # no Ray head here
            # Read back while this operator (with the override) is the one running: the session's own operator
            # resumes after it and rewrites the cost at the shipped prices.
            header, row = local_cluster.kubectl("get", "bd", "bernini", "-n", namespace, "-o", "wide").splitlines()
            assert float(row.split()[header.split().index("$/H")]) == cost["currentDollarsPerHour"], (header, row)

            wait_for(lambda: core.list_namespaced_pod(namespace, label_selector="ray.io/node-type=head").items, "the head pod")
            shown = _run([str(BIN / "bernini"), "status", "bernini", "-n", namespace], kubeconfig, local_cluster)
            print(shown)
            assert shown.startswith(f"{namespace}/bernini: model 1.0.0")
            assert re.search(r"^  Ready +(True|False) +\w+", shown, re.M), shown
            digest = body["status"]["artifacts"]["manifestSha256"]
            assert re.fullmatch(r"[0-9a-f]{64}", digest) and f"manifest sha256 {digest}" in shown
            workers = ", ".join(f"{entry['workers']} x {name}" for name, entry in entries.items())
            assert f"cost: ${cost['currentDollarsPerHour']:,.4f}/h now ({workers})" in shown
            assert "prices: negotiated (test)" in shown
            pods = shown.split("pods:\n", 1)[1]
            assert re.search(r"^  \S+ +\S+-head-\S+ +\w+", pods, re.M), shown  # the head pod with its (KWOK) node
            # The same command as a kubectl plugin (kubectl-bernini on PATH).
            assert _run(["kubectl", "bernini", "status", "bernini", "-n", namespace], kubeconfig, local_cluster) == shown
        finally:
            process.stop()
