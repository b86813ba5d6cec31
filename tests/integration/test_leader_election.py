"""Two operator processes against one API server: only the holder of the Lease writes; a standby takes over when
the leader dies (after the Lease expires) or stops cleanly (at once, the Lease released)."""

import copy
import datetime
import json
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from localdev.waiting import wait_for
from tests.integration.helpers import _condition, _create, _get
from tests.operator_process import OperatorProcess
from tests.tcp_gate import CuttableForwarder

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


@pytest.fixture
def audit_log(local_cluster) -> Path:
    if local_cluster is None:
        pytest.fail("needs the local control plane's audit log; BERNINI_TEST_KUBECONFIG names another cluster")
    return local_cluster.audit_log


def _writes_by(audit_log: Path, since: int, identity: str) -> list[tuple[datetime.datetime, datetime.datetime, str]]:
    """(received, completed, what) of every write the API server took from identity after byte offset since;
    the Lease itself (the election) is left out."""
    found = []
    with audit_log.open() as log:
        log.seek(since)
        for line in log:
            event = json.loads(line)
            target = event.get("objectRef", {})
            if (identity in event.get("userAgent", "") and event["verb"] in ("create", "update", "patch", "delete")
                    and target.get("resource") != "leases" and event.get("stage") == "ResponseComplete"):
                found.append((_time(event["requestReceivedTimestamp"]), _time(event["stageTimestamp"]),
                              f"{event['verb']} {target.get('resource')}/{target.get('name')} {event['responseStatus'].get('code')}"))
    return found


def _time(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _through(kubeconfig: Path, port: int, path: Path) -> Path:
    """A copy of kubeconfig whose server is the forwarder on port (same certificates: 127.0.0.1 is in the SANs)."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_leader_cut_off_from_the_api_server_stops_writing_before_a_standby_starts(
        kubeconfig, bernini_crd, local_s3, namespace, tmp_path, custom, api_client, audit_log, example_deployment):
    """The partition: only the leader loses the API server (new connections hang, open ones drop) for longer than
    the Lease, the standby takes over, then the partition heals. The audit log must show the old leader's last
    write completed before the new leader's first, and the old leader must have exited."""
    server = urllib.parse.urlsplit(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
    paths = [CuttableForwarder((server.hostname, server.port)) for _ in range(2)]
    since = audit_log.stat().st_size
    with OperatorProcess.paused():
        candidates = [OperatorProcess(_through(kubeconfig, path.port, tmp_path / f"kubeconfig-{index}"),
                                      local_s3.credentials_env, tmp_path / f"operator-{index}.log",
                                      namespaces=(namespace,), extra_args=(f"--leader-election-namespace={namespace}",))
                      for index, path in enumerate(paths)]
        leases = client.CoordinationV1Api(api_client)
        try:
            for process in candidates:
                process.start()
            leader = wait_for(lambda: next((p for p in candidates if _leading(p)), None), "a leader", timeout=30)
            standby = next(p for p in candidates if p is not leader)
            old_identity = leases.read_namespaced_lease("bernini-operator", namespace).spec.holder_identity
            template = example_deployment()
            for name in ("a", "b", "c"):
                body = copy.deepcopy(template)
                body["metadata"]["name"] = name
                if name == "a":
                    _create(custom, namespace, body)
                    wait_for(_rendered(custom, namespace, name), "a Rendered by the first leader")
                    cut_at = time.monotonic()
                    paths[candidates.index(leader)].cut()
                elif name == "b":  # made during the partition: only the standby can render it
                    _create(custom, namespace, body)
                    wait_for(lambda: _leading(standby), "the standby to take over", timeout=40)
                    takeover = time.monotonic() - cut_at
                    wait_for(_rendered(custom, namespace, name), "b Rendered by the new leader")
                    paths[candidates.index(leader)].restore()
                else:  # after the partition healed: a leader that still believes it leads would write here too
                    _create(custom, namespace, body)
                    wait_for(_rendered(custom, namespace, name), "c Rendered")
            time.sleep(6)  # one more resync of the operators (5 s)
            new_identity = leases.read_namespaced_lease("bernini-operator", namespace).spec.holder_identity
            exited = leader.process.poll()
        finally:
            for process in candidates:
                process.stop()
            for path in paths:
                path.close()
    old, new = _writes_by(audit_log, since, old_identity), _writes_by(audit_log, since, new_identity)
    print(f"\npartition: standby took over {takeover:.1f}s after the cut; old leader {len(old)} writes, "
          f"new leader {len(new)} writes; old leader exit code {exited}")
    assert new_identity != old_identity and old and new
    assert max(completed for _, completed, _ in old) < min(received for received, _, _ in new), (
        "both replicas wrote in the same interval:\n" + "\n".join(
            f"{who} {received.time()}-{completed.time()} {what}"
            for who, writes in (("old", old), ("new", new)) for received, completed, what in writes))
    assert exited == 1, "the old leader did not step down and exit when it lost the Lease"
    assert 10 < takeover < 30
