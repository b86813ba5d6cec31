"""Every example is either applied to the real control plane (server-side dry-run) or checked by a test
of its own; a new example that neither covers fails here."""

import json
from pathlib import Path

import pytest
import yaml

from localdev.cluster import DEFAULT_BIN_DIR
from tests.delivery.test_chart import run
from localdev.waiting import wait_for

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).parents[2] / "examples"
APPLIED = ["bernini-minimal.yaml", "bernini-production.yaml", "bernini-production-g5.yaml", "serving-serviceaccount.yaml",
           "karpenter-inf2-nodepool.yaml", "karpenter-g5-nodepool.yaml", "karpenter-cpu-nodepool.yaml",
           "argocd/applications.yaml",
           "argocd/argocd-cm-health.yaml", "argocd/root-application.yaml", "networkpolicy.yaml"]
CHECKED_ALONE = ["artifacts-cache.yaml"]  # names its own namespace
THIRD_PARTY_CRDS = DEFAULT_BIN_DIR.parent / "third-party-crds"  # Karpenter and Argo CD, from their Go modules
CHECKED_ELSEWHERE = {
    "argocd/health.lua": "tests/unit/test_argocd_health.py",
    "argocd/application-health.lua": "tests/unit/test_argocd_health.py",
    "iam-policy-artifacts-read.json": "test_iam_policy_is_read_only_on_the_prefix",
    "inputs/chair-prompt.json": "make demo",
    "neuron-helm-chart-values.yaml": "test_neuron_chart_values_advertise_the_resources_the_pods_ask_for",
}


def test_every_example_is_covered():
    files = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}
    assert files == set(APPLIED) | set(CHECKED_ELSEWHERE) | set(CHECKED_ALONE)


@pytest.fixture(scope="module")
def third_party_crds(kubeconfig):
    run("kubectl", "apply", "--server-side", "--field-manager=bernini-tests", "-f", str(THIRD_PARTY_CRDS.resolve()),
        kubeconfig=kubeconfig)
    # kubectl wait fails at once (not waits) while a fresh CRD has no status yet: poll it.
    wait_for(lambda: run("kubectl", "wait", "--for=condition=Established", "--timeout=10s", "crd/nodepools.karpenter.sh",
                         "crd/ec2nodeclasses.karpenter.k8s.aws", "crd/applications.argoproj.io",
                         kubeconfig=kubeconfig, check=False).returncode == 0, "the third-party CRDs to be Established")
    run("kubectl", "create", "namespace", "argocd", kubeconfig=kubeconfig, check=False)
    # A new CRD's storage answers 429 "(re)initializing" for a moment after Established.
    wait_for(lambda: run("kubectl", "get", "nodepools.karpenter.sh,applications.argoproj.io", "-A",
                         kubeconfig=kubeconfig, check=False).returncode == 0, "the new CRDs to serve requests")


@pytest.mark.parametrize("example", APPLIED)
def test_example_passes_a_server_side_dry_run(example, kubeconfig, bernini_crd, third_party_crds, namespace):
    # Objects that name their namespace (argocd) keep it; the others land in the test's namespace.
    result = run("kubectl", "apply", "--dry-run=server", "-n", namespace, "-f", str(EXAMPLES / example),
                 kubeconfig=kubeconfig, check=False)
    if "the namespace from the provided object" in result.stderr:
        result = run("kubectl", "apply", "--dry-run=server", "-f", str(EXAMPLES / example), kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout


def test_the_artifacts_cache_claim_binds_where_the_worker_pods_run(kubeconfig, core):
    """The example PV and claim applied for real (namespace models): the claim binds to the PV, and the PV's node
    affinity names exactly the types the renderer pins neuron worker pods to."""
    from bernini.domain.instances import of_kind

    documents = list(yaml.safe_load_all((EXAMPLES / "artifacts-cache.yaml").read_text()))
    volume, claim = documents
    namespace = claim["metadata"]["namespace"]
    run("kubectl", "create", "namespace", namespace, kubeconfig=kubeconfig, check=False)
    run("kubectl", "apply", "-f", str(EXAMPLES / "artifacts-cache.yaml"), kubeconfig=kubeconfig)
    try:
        wait_for(lambda: core.read_namespaced_persistent_volume_claim(claim["metadata"]["name"], namespace).status.phase
                 == "Bound", "the example claim to bind to its PersistentVolume", timeout=60)
        term = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert term["key"] == "node.kubernetes.io/instance-type"
        assert set(term["values"]) == {t for t in of_kind("neuron") if t.startswith("inf2")}
    finally:
        run("kubectl", "delete", "-f", str(EXAMPLES / "artifacts-cache.yaml"), "--wait=false", kubeconfig=kubeconfig)


def test_the_network_policy_selects_the_rendered_ray_pods_and_opens_serves_port():
    from bernini.api.spec import BerniniDeploymentSpec
    from bernini.render.rayservice import render_rayservice
    from bernini.render.serve_config import HTTP_OPTIONS
    from tests.unit.specs import make_manifest

    policy = yaml.safe_load((EXAMPLES / "networkpolicy.yaml").read_text())
    example = yaml.safe_load((EXAMPLES / "bernini-minimal.yaml").read_text())
    cluster = render_rayservice(example["metadata"]["name"], "models", "uid",
                                BerniniDeploymentSpec.model_validate(example["spec"]), make_manifest(), "0" * 64
                                )["spec"]["rayClusterConfig"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for template in [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        assert selector.items() <= template["metadata"]["labels"].items()
    client_rule = policy["spec"]["ingress"][2]
    assert client_rule["ports"] == [{"protocol": "TCP", "port": HTTP_OPTIONS["port"]}]


def test_neuron_chart_values_advertise_the_resources_the_pods_ask_for():
    values = yaml.safe_load((EXAMPLES / "neuron-helm-chart-values.yaml").read_text())
    assert values["devicePlugin"]["enabled"] and values["scheduler"]["enabled"]
    tolerated = values["devicePlugin"]["tolerations"][0]
    assert (tolerated["key"], tolerated["effect"]) == ("aws.amazon.com/neuron", "NoSchedule")


@pytest.mark.parametrize("nodepool_file, deployment_file", [("karpenter-inf2-nodepool.yaml", "bernini-production.yaml"),
                                                            ("karpenter-g5-nodepool.yaml", "bernini-production-g5.yaml")])
def test_nodepool_matches_what_the_renderer_schedules_on(nodepool_file, deployment_file):
    """The accelerated groups on the example's accelerator pool, whose taint is exactly what they tolerate; the
    CPU group on the untainted CPU pool."""
    from bernini.api.spec import BerniniDeploymentSpec
    from bernini.render.rayservice import render_rayservice
    from tests.unit.specs import make_manifest

    def pool(name: str) -> tuple[list[str], list[dict]]:
        template = next(yaml.safe_load_all((EXAMPLES / name).read_text()))["spec"]["template"]["spec"]
        types = next(r for r in template["requirements"] if r["key"] == "node.kubernetes.io/instance-type")["values"]
        return types, template.get("taints", [])

    accelerated_types, taints = pool(nodepool_file)
    cpu_types, cpu_taints = pool("karpenter-cpu-nodepool.yaml")
    assert cpu_taints == []
    spec = BerniniDeploymentSpec.model_validate(yaml.safe_load((EXAMPLES / deployment_file).read_text())["spec"])
    target = "inf2" if spec.accelerator.kind == "neuron" else "cuda"
    rayservice = render_rayservice("bernini", "models", "uid", spec, make_manifest(spec.model.version, target=target),
                                   "f" * 64)
    *accelerated, cpu = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert accelerated
    for group in accelerated:
        pod = group["template"]["spec"]
        assert pod["nodeSelector"]["node.kubernetes.io/instance-type"] in accelerated_types
        [toleration] = pod["tolerations"]
        assert {"key": toleration["key"], "value": "true", "effect": "NoSchedule"} in taints
    assert cpu["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] in cpu_types
    assert "tolerations" not in cpu["template"]["spec"]


def test_iam_policy_is_read_only_on_the_prefix():
    policy = json.loads((EXAMPLES / "iam-policy-artifacts-read.json").read_text())
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "*" != statement["Resource"]
    production = yaml.safe_load((EXAMPLES / "bernini-production.yaml").read_text())
    bucket, _, prefix = production["spec"]["model"]["artifactsUri"].removeprefix("s3://").partition("/")
    get = next(s for s in policy["Statement"] if s["Action"] == ["s3:GetObject"])
    assert get["Resource"] == f"arn:aws:s3:::{bucket}/{prefix.split('/')[0]}/*"
