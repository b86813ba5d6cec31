"""The Helm chart and plain kubectl, proven on the real control plane with the helm and kubectl binaries."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from bernini.api import GROUP, PLURAL, VERSION
from localdev.cluster import DEFAULT_BIN_DIR
from tests.operator_process import OperatorProcess
from localdev.waiting import wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "bernini-operator"
RELEASE, SYSTEM = "bernini", "bernini-system"
ACCOUNT = f"system:serviceaccount:{SYSTEM}:bernini-operator"


def run(*command: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = [str(DEFAULT_BIN_DIR / command[0]), *command[1:]]
    if kubeconfig:
        argv.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_helm_lint_is_clean():
    result = run("helm", "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_bad_values_fail_at_install_with_a_clear_message(kubeconfig):
    result = run("helm", "template", RELEASE, str(CHART), "--kube-version", "1.34.12", "--set", "workers=0",
                 "--set", "logLevel=chatty", check=False)
    assert result.returncode != 0
    assert "workers" in result.stderr and "logLevel" in result.stderr


def test_rendered_chart_passes_a_server_side_dry_run(kubeconfig, bernini_crd):
    manifests = run("helm", "template", RELEASE, str(CHART), "--namespace", "default", "--kube-version", "1.34.12").stdout
    run("kubectl", "apply", "--dry-run=server", "-f", "-", kubeconfig=kubeconfig, input=manifests)


@pytest.fixture(scope="module")
def installed(kubeconfig, bernini_crd):
    run("helm", "install", RELEASE, str(CHART), "--namespace", SYSTEM, "--create-namespace", "--wait=false",
        kubeconfig=kubeconfig)
    yield
    run("helm", "uninstall", RELEASE, "--namespace", SYSTEM, kubeconfig=kubeconfig, check=False)


def test_helm_install_creates_a_restricted_single_replica_operator(installed, kubeconfig, core):
    deployment = json.loads(run("kubectl", "get", "deployment", "-n", SYSTEM, "bernini-operator", "-o", "json",
                                kubeconfig=kubeconfig).stdout)
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert f"--leader-election-namespace={SYSTEM}" in spec["template"]["spec"]["containers"][0]["args"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The namespace enforces the restricted profile: a pod that breaks it would be refused.
    run("kubectl", "label", "namespace", SYSTEM, "pod-security.kubernetes.io/enforce=restricted", "--overwrite",
        kubeconfig=kubeconfig)
    run("kubectl", "rollout", "restart", "deployment/bernini-operator", "-n", SYSTEM, kubeconfig=kubeconfig)
    wait_for(lambda: [p for p in core.list_namespaced_pod(SYSTEM).items if p.status.phase == "Running"],
             "the operator pod (KWOK runs no containers) to be admitted and Running", timeout=60)


@pytest.fixture(scope="module")
def gateway_crds(kubeconfig):
    """The Gateway API's CRDs (make gateway): can-i answers no for a resource the API server does not serve."""
    crds = DEFAULT_BIN_DIR.parent / "gateway-crds"
    for kind in ("gateways", "httproutes"):
        run("kubectl", "apply", "--server-side", "-f", str(crds / f"gateway.networking.k8s.io_{kind}.yaml"),
            kubeconfig=kubeconfig)
    run("kubectl", "wait", "--for=condition=Established", "crd/gateways.gateway.networking.k8s.io",
        "crd/httproutes.gateway.networking.k8s.io", kubeconfig=kubeconfig)


@pytest.mark.parametrize("verb, resource, allowed", [
    ("list", "secrets", "no"),
    ("get", "secrets -n kube-system", "no"),
    ("create", "pods", "no"),
    ("list", "pods", "yes"),
    ("get", "pods/log", "no"),
    ("get", "pods/exec", "no"),
    ("delete", "nodes", "no"),
    ("delete", "rayservices.ray.io", "no"),
    ("patch", "rayservices.ray.io", "yes"),
    ("patch", "rayservices.ray.io --subresource=status", "yes"),
    ("update", "rayservices.ray.io --subresource=status", "no"),
    ("get", "rayclusters.ray.io", "yes"),
    ("watch", "rayclusters.ray.io", "yes"),
    ("delete", "daemonsets.apps", "yes"),
    ("get", "daemonsets.apps", "yes"),
    ("list", "daemonsets.apps", "no"),
    ("create", "deployments.apps", "no"),
    ("patch", "rayclusters.ray.io", "yes"),
    ("delete", "rayclusters.ray.io", "no"),
    ("get", "gateways.gateway.networking.k8s.io", "yes"),
    ("list", "gateways.gateway.networking.k8s.io", "no"),
    ("patch", "gateways.gateway.networking.k8s.io", "no"),
    ("get", "httproutes.gateway.networking.k8s.io", "no"),
    ("watch", "berninideployments.bernini.dev", "yes"),
    ("patch", "berninideployments.bernini.dev --subresource=status", "yes"),
    ("patch", "berninideployments.bernini.dev", "no"),
    ("update", f"leases.coordination.k8s.io -n {SYSTEM}", "yes"),
    ("update", "leases.coordination.k8s.io -n kube-system", "no"),
    ("delete", f"leases.coordination.k8s.io -n {SYSTEM}", "no"),
])
def test_rbac_is_least_privilege(installed, gateway_crds, kubeconfig, verb, resource, allowed):
    scope = [] if "-n" in resource else ["--all-namespaces"]
    result = run("kubectl", "auth", "can-i", verb, *resource.split(), f"--as={ACCOUNT}", *scope,
                 kubeconfig=kubeconfig, check=False)
    assert result.stdout.strip() == allowed, f"can-i {verb} {resource}: {result.stdout}{result.stderr}"


def _service_account_kubeconfig(kubeconfig: Path, directory: Path) -> Path:
    """A kubeconfig holding a real token of the chart's ServiceAccount (TokenRequest API)."""
    token = run("kubectl", "create", "token", "bernini-operator", "-n", SYSTEM, "--duration=1h",
                kubeconfig=kubeconfig).stdout.strip()
    config = yaml.safe_load(kubeconfig.read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    path = directory / "operator-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_operator_reconciles_with_only_the_charts_rbac(installed, kubeconfig, custom, local_s3, namespace,
                                                            example_deployment, tmp_path):
    # Any operator running with admin rights would hide missing permissions: pause them all.
    with OperatorProcess.paused():
        scoped = OperatorProcess(_service_account_kubeconfig(kubeconfig, tmp_path), local_s3.credentials_env,
                                 tmp_path / "operator.log",
                                 extra_args=("--log-format=json", f"--leader-election-namespace={SYSTEM}"))
        scoped.start()
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, example_deployment())

            def rendered():
                body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bernini")
                conditions = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
                return conditions.get("Rendered", {}).get("status") == "True" and conditions
            conditions = wait_for(rendered, "the chart-RBAC operator to render the example")
            assert conditions["RayServiceReady"]["status"] in ("False", "Unknown")
            assert custom.get_namespaced_custom_object("ray.io", "v1", namespace, "rayservices", "bernini")
            log = scoped.log()
            assert "APIForbiddenError" not in log and "status=403" not in log, log[-3000:]
            records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            ours = [r for r in records if r.get("message") == "created RayService"]
            assert ours and ours[0]["object"]["namespace"] == namespace and ours[0]["object"]["name"] == "bernini"
        finally:
            scoped.stop()


def test_helm_upgrade_and_uninstall_leave_no_orphans(kubeconfig, bernini_crd):
    run("helm", "install", "again", str(CHART), "--namespace", "bernini-upgrade", "--create-namespace",
        kubeconfig=kubeconfig)
    run("helm", "upgrade", "again", str(CHART), "--namespace", "bernini-upgrade", "--set", "resyncSeconds=30",
        kubeconfig=kubeconfig)
    args = json.loads(run("kubectl", "get", "deployment", "again-bernini-operator", "-n", "bernini-upgrade", "-o",
                          "jsonpath={.spec.template.spec.containers[0].args}", kubeconfig=kubeconfig).stdout)
    assert "--resync-seconds=30" in args
    run("helm", "uninstall", "again", "--namespace", "bernini-upgrade", "--wait", kubeconfig=kubeconfig)
    leftovers = run("kubectl", "get", "deployment,serviceaccount,service,role,rolebinding", "-n", "bernini-upgrade",
                    "-l", "app.kubernetes.io/instance=again", "-o", "name", kubeconfig=kubeconfig).stdout
    cluster_scoped = run("kubectl", "get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=again",
                         "-o", "name", kubeconfig=kubeconfig).stdout
    assert leftovers.strip() == "" and cluster_scoped.strip() == ""
    # CRDs stay, per Helm's convention, so uninstalling never deletes users' BerniniDeployments.
    run("kubectl", "get", "crd", "berninideployments.bernini.dev", kubeconfig=kubeconfig)


def test_kubectl_apply_explain_get_and_wait(kubeconfig, custom, operator, namespace, example_deployment):
    run("kubectl", "apply", "-f", str(ROOT / "crds"), kubeconfig=kubeconfig)  # client-side: fits the annotation limit
    explained = run("kubectl", "explain", "berninideployment.spec", "--recursive", kubeconfig=kubeconfig).stdout
    for field in ("artifactsUri", "accelerators", "targetOngoingRequests", "kind", "instanceTypes", "schedulerName",
                  "suspend"):
        assert field in explained
    described = run("kubectl", "explain", "berninideployment.spec.stages.diffusion.accelerators", kubeconfig=kubeconfig).stdout
    assert "below 1 a replica shares a GPU" in " ".join(described.split())
    body = example_deployment()
    body["metadata"]["namespace"] = namespace
    run("kubectl", "apply", "-f", "-", kubeconfig=kubeconfig, input=json.dumps(body))
    run("kubectl", "wait", "--for=condition=ArtifactsVerified", "bd/bernini", "-n", namespace, "--timeout=60s",
        kubeconfig=kubeconfig)
    table = run("kubectl", "get", "bd", "-n", namespace, kubeconfig=kubeconfig).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "REASON", "VERSION", "ENDPOINT", "AGE"]
    assert table[1].split()[:4] == ["bernini", "False", "RayServiceNotReady", "1.0.0"]


def _rendered(*sets: str) -> list[dict]:
    flags = [flag for value in sets for flag in ("--set", value)]
    text = run("helm", "template", RELEASE, str(CHART), "--namespace", SYSTEM, "--kube-version", "1.34.12", *flags).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_namespaced_mode_grants_nothing_cluster_wide():
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in _rendered("watchNamespaces={models,staging}")]
    assert ("ClusterRole", None) not in kinds and ("ClusterRoleBinding", None) not in kinds
    assert {("Role", "models"), ("Role", "staging"), ("RoleBinding", "models"), ("RoleBinding", "staging")} <= set(kinds)


def test_irsa_annotation_and_service_monitor_are_opt_in():
    plain = {d["kind"]: d for d in _rendered()}
    assert "annotations" not in plain["ServiceAccount"]["metadata"] and "ServiceMonitor" not in plain
    role = "arn:aws:iam::123456789012:role/bernini-operator"
    configured = {d["kind"]: d for d in _rendered(f"serviceAccount.roleArn={role}", "metrics.serviceMonitor.enabled=true")}
    assert configured["ServiceAccount"]["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    assert configured["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"


def test_a_price_override_becomes_a_mounted_file_the_operator_loads_and_restarts_on(tmp_path):
    from bernini.cost.prices import load_override

    values = tmp_path / "values.yaml"  # --set would pass 0.53 as a string
    values.write_text("prices: {source: rate card 2026, asOf: '2026-11-01', dollarsPerHour: {inf2.xlarge: 0.53}}\n")
    plain = {d["kind"]: d for d in _rendered()}
    priced = {d["kind"]: d for d in yaml.safe_load_all(run("helm", "template", RELEASE, str(CHART), "--kube-version", "1.34.12", "-f", str(values)).stdout) if d}
    assert "ConfigMap" not in plain
    assert not any(a.startswith("--prices") for a in plain["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"])
    (tmp_path / "prices.yaml").write_text(priced["ConfigMap"]["data"]["prices.yaml"])
    table = load_override(tmp_path / "prices.yaml")  # the operator's own loader reads what the chart wrote
    assert (table.source, table.as_of, table.dollars_per_hour) == ("rate card 2026", "2026-11-01", {"inf2.xlarge": 0.53})
    pod = priced["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert "--prices=/etc/bernini/prices/prices.yaml" in container["args"]
    assert {"name": "prices", "mountPath": "/etc/bernini/prices", "readOnly": True} in container["volumeMounts"]
    assert {"name": "prices", "configMap": {"name": priced["ConfigMap"]["metadata"]["name"]}} in pod["spec"]["volumes"]
    assert pod["metadata"]["annotations"]["checksum/prices"] != \
        plain["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/prices"]
    refused = run("helm", "template", RELEASE, str(CHART), "--kube-version", "1.34.12", "--set-json", 'prices={"source":"s","asOf":"x","dollarsPerHour":{"inf2.xlarge":-1}}', check=False)
    assert refused.returncode != 0 and "prices" in refused.stderr, refused.stderr


def test_liveness_endpoint_answers(kubeconfig, bernini_crd, local_s3, tmp_path):
    import urllib.request

    from localdev.processes import free_port

    port = free_port()
    process = OperatorProcess(kubeconfig, local_s3.credentials_env, tmp_path / "operator.log",
                              extra_args=(f"--liveness=http://127.0.0.1:{port}/healthz",))
    process.start()
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    return response.status == 200 and json.loads(response.read())
            except OSError:
                return False
        probes = wait_for(healthy, "kopf's liveness endpoint")
        assert "queue" in probes  # our probe: the work queue depth
    finally:
        process.stop()
