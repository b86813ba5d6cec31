"""Every call the operator makes has a deadline: a hung store or API server costs one worker for a bounded time,
the other objects keep converging, and liveness says when a worker is stuck."""

import copy
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3
from kubernetes import client

from bernini.reconcile.kube import Kube
from localdev.processes import free_port
from localdev.waiting import wait_for
from tests.fake_stores import TricklingStore, serving
from tests.integration.helpers import _condition, _create, _get
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.cluster


def test_a_blackholed_api_server_connection_times_out_instead_of_holding_a_worker():
    """A listener that accepts and never answers, as a half-open connection to the API server does."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    configuration = client.Configuration(host=f"https://127.0.0.1:{listener.getsockname()[1]}")
    configuration.verify_ssl = False
    configuration.retries = False
    kube = Kube(client.ApiClient(configuration), request_timeout=(1.0, 2.0))
    started = time.monotonic()
    try:
        with pytest.raises(urllib3.exceptions.HTTPError):
            kube.read_rayservice("default", "bernini")
    finally:
        listener.close()
    took = time.monotonic() - started
    print(f"\nblackholed API server: the call gave up after {took:.1f}s (timeouts: 1 s connect, 2 s read)")
    assert held and took < 5


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
