"""Every call the operator makes has a deadline: a hung store or API server costs one worker for a bounded time,
the other objects keep converging, and liveness says when a worker is stuck."""

import copy
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from kubernetes import client

from bernini.reconcile.kube import REQUEST_TIMEOUT, Kube, api_client
from localdev.processes import free_port
from localdev.waiting import wait_for
from tests.fake_stores import TricklingStore, serving
from tests.integration.helpers import _condition, _create, _get
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.cluster


def _every_call(kube: Kube) -> dict:
    """Each of Kube's calls, with arguments it would send."""
    body = {"apiVersion": "bernini.dev/v1alpha1", "kind": "BerniniDeployment",
            "metadata": {"name": "bernini", "namespace": "default", "uid": "0"}}
    rayservice = {"metadata": {"name": "bernini", "namespace": "default"}}
    return {
        "read_rayservice": lambda: kube.read_rayservice("default", "bernini"),
        "read_raycluster": lambda: kube.read_raycluster("default", "bernini"),
        "read_deployment": lambda: kube.read_deployment("default", "bernini"),
        "read_daemonset": lambda: kube.read_daemonset("default", "bernini-prewarm"),
        "list_pods": lambda: kube.list_pods("default", "ray.io/cluster in (x)"),
        "apply_rayservice": lambda: kube.create_rayservice(rayservice),
        "apply_daemonset": lambda: kube.apply_daemonset(rayservice, None),
        "delete_daemonset": lambda: kube.delete_daemonset("default", "bernini-prewarm", "0"),
        "patch_status": lambda: kube.patch_status("default", "bernini", {}),
        "post_event": lambda: kube.post_event(body, "Normal", "Test", "a message"),
    }


def test_every_api_call_gives_up_on_a_blackholed_api_server_within_its_deadline(tmp_path, monkeypatch, kubeconfig):
    """A listener that accepts and never answers, as a half-open connection to the API server does. The client is
    built as the operator builds it (its timeouts, its retries), and every call it makes is tried at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(64)
    held = []

    def hold():
        while True:
            try:
                held.append(listener.accept())
            except OSError:
                return
    threading.Thread(target=hold, daemon=True).start()
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{listener.getsockname()[1]}"
    (tmp_path / "blackhole").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "blackhole"))
    kube = Kube(api_client())
    budget = sum(REQUEST_TIMEOUT) + 2
    took: dict[str, float] = {}

    def attempt(name, call):
        started = time.monotonic()
        try:
            call()
        except Exception:  # noqa: BLE001  any failure is the answer; only its timing is tested
            took[name] = time.monotonic() - started
    try:
        threads = [threading.Thread(target=attempt, args=item, daemon=True) for item in _every_call(kube).items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(budget + 5)
    finally:
        listener.close()
    print(f"\nblackholed API server (timeouts {REQUEST_TIMEOUT}): " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
    assert held
    assert set(took) == set(_every_call(kube)), f"calls that never gave up: {set(_every_call(kube)) - set(took)}"
    assert max(took.values()) < budget


@pytest.fixture
def trickling_store():
    server = serving(TricklingStore)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def watched_operator(kubeconfig, bernini_crd, local_s3, namespace, tmp_path):
    """The only operator running, with liveness on and a 2 s stuck limit."""
    port = free_port()
    with OperatorProcess.paused():
        process = OperatorProcess(kubeconfig, local_s3.credentials_env, tmp_path / "operator.log", namespaces=(namespace,),
                                  extra_args=(f"--liveness=http://127.0.0.1:{port}/healthz", "--stuck-seconds=2"))
        process.start()
        process.liveness = f"http://127.0.0.1:{port}/healthz"
        try:
            yield process
        finally:
            process.stop()


def _health(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_hung_store_delays_no_other_deployment_and_fails_liveness_while_it_lasts(
        watched_operator, trickling_store, custom, namespace, example_deployment):
    template = example_deployment()
    hung = copy.deepcopy(template)
    hung["metadata"]["name"] = "hung"
    hung["spec"]["s3"]["endpointUrl"] = trickling_store
    hung_at = time.monotonic()
    _create(custom, namespace, hung)
    time.sleep(3)  # its reconcile is now waiting on the store, past the 2 s stuck limit
    assert _health(watched_operator.liveness) == 500, "liveness passed while a reconcile was stuck"

    latencies = {}
    for name in ("a", "b", "c"):
        body = copy.deepcopy(template)
        body["metadata"]["name"] = name
        created = time.monotonic()
        _create(custom, namespace, body)
        wait_for(lambda: _condition(_get(custom, namespace, name), "Rendered").get("status") == "True", f"{name} Rendered")
        latencies[name] = time.monotonic() - created
    print("\nwhile one reconcile hung on a trickling store: others Rendered in "
          + ", ".join(f"{seconds:.2f}s" for seconds in latencies.values()))
    assert max(latencies.values()) < 5

    condition = wait_for(lambda: (c := _condition(_get(custom, namespace, "hung"), "ArtifactsVerified")).get("reason")
                         == "StoreUnreachable" and c, "the hung read to be given up", timeout=40)
    print(f"hung read given up {time.monotonic() - hung_at:.1f}s after the create: {condition['message']}")
    assert "did not finish within 15s" in condition["message"]
    wait_for(lambda: _health(watched_operator.liveness) == 200, "liveness to pass again", timeout=15)
