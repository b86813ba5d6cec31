"""Two operator processes against one API server: only the holder of the Lease writes; a standby takes over when
the leader dies (after the Lease expires) or stops cleanly (at once, the Lease released)."""

import copy
import time

import pytest
from kubernetes import client

from localdev.waiting import wait_for
from tests.integration.helpers import _condition, _create, _get
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.cluster


@pytest.fixture
def candidates(kubeconfig, bernini_crd, local_s3, namespace, tmp_path):
    with OperatorProcess.paused():
        processes = [OperatorProcess(kubeconfig, local_s3.credentials_env, tmp_path / f"operator-{index}.log",
                                     namespaces=(namespace,), extra_args=(f"--leader-election-namespace={namespace}",))
                     for index in range(2)]
        try:
            for process in processes:
                process.start()
            yield processes
        finally:
            for process in processes:
                process.stop()


def _leading(process: OperatorProcess) -> bool:
    return process.process.poll() is None and process.metrics().get("bernini_leader") == 1.0


def _writes(process: OperatorProcess) -> float:
    return sum(value for name, value in process.metrics().items() if name.startswith("bernini_api_writes_total"))


def _rendered(custom, namespace, name):
    return lambda: _condition(_get(custom, namespace, name), "Rendered").get("status") == "True"


def test_only_the_lease_holder_writes_and_a_standby_takes_over(candidates, custom, api_client, namespace, example_deployment):
    leader = wait_for(lambda: next((p for p in candidates if _leading(p)), None), "a leader", timeout=30)
    standby = next(p for p in candidates if p is not leader)
    template = example_deployment()
    for name in ("a", "b"):
        body = copy.deepcopy(template)
        body["metadata"]["name"] = name
        _create(custom, namespace, body)
        wait_for(_rendered(custom, namespace, name), f"{name} Rendered")
    assert _writes(leader) > 0 and _writes(standby) == 0, (_writes(leader), _writes(standby))
    assert not _leading(standby)
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease("bernini-operator", namespace)
    assert lease.spec.holder_identity and lease.spec.lease_duration_seconds == 15

    leader.kill()  # no release: the standby waits out the Lease
    killed_at = time.monotonic()
    wait_for(lambda: _leading(standby), "the standby to take over", timeout=40)
    takeover = time.monotonic() - killed_at
    body = copy.deepcopy(template)
    body["metadata"]["name"] = "c"
    _create(custom, namespace, body)
    wait_for(_rendered(custom, namespace, "c"), "c Rendered by the new leader")
    print(f"\nleader killed: standby took over in {takeover:.1f}s (Lease 15 s)")
    assert 10 < takeover < 25, "took over before the Lease could have expired, or long after"

    leader.start()  # back as a standby
    time.sleep(3)
    assert not _leading(leader) and _writes(leader) == 0
    standby.stop()  # SIGTERM, as Kubernetes stops a pod: the Lease is released, the process exits by itself
    stopped_at = time.monotonic()
    assert standby.process.returncode == 0, "the leader did not exit on SIGTERM (it was killed)"
    wait_for(lambda: _leading(leader), "the restarted process to take over", timeout=20)
    handover = time.monotonic() - stopped_at
    print(f"leader stopped cleanly: handed over in {handover:.1f}s")
    assert handover < 6
