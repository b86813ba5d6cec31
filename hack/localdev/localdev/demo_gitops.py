"""`make demo-gitops`: the same job as `make demo`, shipped the GitOps way, for a person to watch.

On the real-node cluster (started or reused as `make demo` does), a real Argo CD syncs examples/argocd from
local git repositories: the CRDs, then the operator's chart (the operator runs as a pod from the local image),
then the model. Each Application's sync and health is printed when it changes. Once the model serves, the
demo commits version 1.1.0 to the platform repository and prints the rollout the same way, then asks the new
version for a mesh. Argo CD keeps running with the cluster until `make cluster-down`.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import yaml

from localdev import processes
from localdev.argocd import MODEL_NAMESPACE as MODELS
from localdev.argocd import OPERATOR_NAMESPACE, ExampleRepositories, LocalArgoCD, state
from localdev.cluster import ClusterError, LocalCluster
from localdev.demo import (EXAMPLE, DemoFailed, artifacts_uri, ensure_cluster, ensure_s3, publish_artifacts,
                           request_mesh, say)
from localdev.s3server import LocalS3
from localdev.sizing import fit_operator_chart, fit_to_local_nodes
from localdev.stack import destination_namespaces, platform_repository
from localdev.waiting import wait_for

VERSIONS = ("1.0.0", "1.1.0")


def _model(cluster: LocalCluster, s3: LocalS3, version: str) -> list[dict]:
    return platform_repository(fit_to_local_nodes(yaml.safe_load(EXAMPLE.read_text()),
                                                  cluster.node_layer.images["SERVING_IMAGE"], s3.endpoint_url,
                                                  version, artifacts_uri(version)))


def _stop_demo_operator(cluster: LocalCluster) -> None:
    """`make demo`'s operator process would fight the chart's operator over the same objects."""
    record = cluster.state_dir / "operator.pid"
    if record.exists():
        pid = int(record.read_text())
        if processes.is_running(pid, sys.executable):
            say(f"stopping make demo's operator process (pid {pid}): the chart's operator takes over")
        cluster.stop_processes({pid: sys.executable})
    record.unlink(missing_ok=True)


def _start_argocd(cluster: LocalCluster, root: Path) -> LocalArgoCD:
    argocd = LocalArgoCD(cluster, root)
    record = cluster.state_dir / "argocd.json"
    if record.exists():  # a previous demo's Argo CD: start afresh, its repositories are replaced below
        cluster.stop_processes({int(pid): exe for pid, exe in json.loads(record.read_text()).items()})
    argocd.up()
    for pid, executable in argocd.pids.items():
        cluster.adopt(pid, executable)  # `make cluster-down` stops them with the rest
    record.write_text(json.dumps(argocd.pids))
    say(f"Argo CD (application-controller, repo-server, Redis) running on loopback; logs in {root / 'logs'}")
    return argocd


def _watch(argocd: LocalArgoCD, done, what: str, timeout: float = 900) -> float:
    """Print each Application's (sync, health, message) when it changes, until done() holds."""
    started, seen = time.monotonic(), {}

    def progress():
        for application in argocd.applications():
            name, current = application["metadata"]["name"], state(application)
            if seen.get(name) != current:
                seen[name] = current
                say(f"  {time.monotonic() - started:5.0f}s  {name:17} {current[0] or '-':9} {current[1] or '-':12} "
                    f"{current[2][:110]}")
        return done()

    wait_for(progress, what, timeout, interval=1, failure=DemoFailed,
             explain=lambda: f"Argo CD logs in {argocd.root / 'logs'}")
    return time.monotonic() - started


def _model_serves(cluster: LocalCluster, version: str):
    def check() -> bool:
        try:
            body = json.loads(cluster.kubectl("get", "berninideployments.bernini.dev", "bernini", "-n", MODELS, "-o", "json"))
        except ClusterError:  # the CRD's or the model's wave has not come yet
            return False
        ready = next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("status") == "True" and body["status"].get("modelVersion") == version
    return check


def run(root: Path) -> int:
    cluster = ensure_cluster(root)
    s3 = ensure_s3(cluster)
    _stop_demo_operator(cluster)
    for seed, version in enumerate(VERSIONS):
        publish_artifacts(cluster, s3, version, seed=seed)
    cluster.kubectl("apply", "--server-side", "--field-manager=bernini-demo", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": destination_namespaces((MODELS, OPERATOR_NAMESPACE), s3)}))
    gitops = (cluster.state_dir / "gitops").resolve()
    shutil.rmtree(gitops, ignore_errors=True)
    argocd = _start_argocd(cluster, gitops / "argocd")
    repositories = ExampleRepositories.create(gitops / "git", _model(cluster, s3, VERSIONS[0]),
                                              fit_operator_chart(cluster.node_layer.images["OPERATOR_IMAGE"], s3.endpoint_url))
    say(f"git repositories: {repositories.operator.url} (CRDs, chart, Applications), "
        f"{repositories.platform.url} (the model)")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(repositories.root_application()))
    say("applied examples/argocd/root-application.yaml; Application states (sync, health, message):")
    seconds = _watch(argocd, _model_serves(cluster, VERSIONS[0]), f"model {VERSIONS[0]} serving")
    say(f"the tree is synced and the model serves, {seconds:.0f}s after the root Application")
    request_mesh(cluster, MODELS)

    repositories.commit_model(_model(cluster, s3, VERSIONS[1]), f"bernini {VERSIONS[1]}")
    argocd.refresh("bernini-model")  # what the git host's webhook does
    say(f"committed version {VERSIONS[1]} to the platform repository:")
    seconds = _watch(argocd, _model_serves(cluster, VERSIONS[1]), f"model {VERSIONS[1]} serving")
    say(f"{VERSIONS[1]} serves {seconds:.0f}s after the commit")
    request_mesh(cluster, MODELS)
    say(f"Argo CD and the cluster keep running; KUBECONFIG={cluster.kubeconfig}; "
        f"kubectl get applications -n argocd; stop everything with `make cluster-down`")
    return 0
