"""The Prometheus Operator and a Prometheus it manages, on the real nodes, wired as the kube-prometheus-stack
Helm chart wires them: the Prometheus picks up ServiceMonitors, PodMonitors and PrometheusRules in every
namespace that carry the label `release: kube-prometheus-stack`. Built by `make monitoring`
(hack/monitoring/build.sh: the operator's bundle, and the three binaries the images are made of)."""

import functools
import json
import re
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from localdev.argocd import OPERATOR_NAMESPACE
from localdev.cluster import REPO_ROOT
from localdev.s3server import LocalS3
from localdev.sizing import fit_operator_chart
from localdev.stack import destination_namespaces
from localdev.waiting import wait_for

NAMESPACE = "monitoring"
PROMETHEUS = "k8s"  # the Prometheus object; its pod is prometheus-k8s-0
SELECTED = {"release": "kube-prometheus-stack"}
BUILT = REPO_ROOT / ".local" / "monitoring"  # hack/monitoring/build.sh's cache
CHART = REPO_ROOT / "charts" / "bernini-operator"
RELEASE = "bernini"
# Scrapes and rule evaluations: short, so that a test sees a series or an alert move within seconds of it.
INTERVAL = "5s"


def operator_manifests(bundle: str, operator_image: str, reloader_image: str) -> tuple[str, list[str], list[dict]]:
    """The Prometheus Operator's bundle as (its CRDs' YAML, their names, the rest): in NAMESPACE, on the local
    images, without the flags that make it keep a kubelet Service (nothing here scrapes kubelets), and with no
    CPU requests, its reloaders' included (see prometheus_manifests). The CRDs stay text: PyYAML reads YAML 1.1, where a bare `=` in
    their enums is a tag it cannot construct."""
    texts = [text for text in re.split(r"^---$", bundle, flags=re.MULTILINE) if text.strip()]
    crds = [text for text in texts if re.search(r"^kind: CustomResourceDefinition$", text, flags=re.MULTILINE)]
    names = [re.search(r"^  name: (\S+)$", text, flags=re.MULTILINE).group(1) for text in crds]
    rest = [yaml.safe_load(text) for text in texts if text not in crds]
    for doc in rest:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = NAMESPACE
        for subject in doc.get("subjects", []):
            subject["namespace"] = NAMESPACE
        if doc["kind"] == "Deployment":
            container, = doc["spec"]["template"]["spec"]["containers"]
            container["image"] = operator_image
            # A CPU limit without a request would become the request.
            container["args"] = [f"--prometheus-config-reloader={reloader_image}", "--config-reloader-cpu-request=0",
                                 "--config-reloader-cpu-limit=0"]
            container["resources"]["requests"].pop("cpu")
            container["resources"]["limits"].pop("cpu")
    return "\n---\n".join(crds), names, rest


def chart_metrics(**rule) -> dict:
    """The chart's metrics.* values that hand its monitors and rules to this Prometheus; `rule` sets
    metrics.prometheusRule's windows and thresholds."""
    return {"serviceMonitor": {"enabled": True, "interval": INTERVAL, "labels": SELECTED},
            "rayPodMonitor": {"enabled": True, "interval": INTERVAL, "labels": SELECTED},
            "prometheusRule": {"enabled": True, "labels": SELECTED, **rule}}


def prometheus_manifests(image: str, version: str) -> list[dict]:
    """A Prometheus as kube-prometheus-stack makes it: its ServiceAccount may read pods, Services and endpoints
    everywhere (service discovery), and it selects monitors and rules by SELECTED in every namespace."""
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prometheus", "namespace": NAMESPACE}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "bernini-prometheus"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "bernini-prometheus"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bernini-prometheus"},
               "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": NAMESPACE}]}
    everywhere = {}
    prometheus = {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
        "metadata": {"name": PROMETHEUS, "namespace": NAMESPACE},
        "spec": {
            "image": image, "version": version, "replicas": 1, "serviceAccountName": "prometheus",
            "scrapeInterval": INTERVAL, "evaluationInterval": INTERVAL,
            **{f"{kind}Selector": {"matchLabels": SELECTED} for kind in ("serviceMonitor", "podMonitor", "rule")},
            **{f"{kind}NamespaceSelector": everywhere for kind in ("serviceMonitor", "podMonitor", "rule")},
            # No CPU requests in the stack (nor the operator's pod): on two CPU nodes an upgrade's second head
            # and CPU worker fit beside the first only as tightly as without monitoring (a full-suite run had
            # the new worker never placed with 10m and 50m requests here).
            "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "fsGroup": 65534,
                                "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }
    return [account, role, binding, prometheus]


class LocalMonitoring:
    """The stack on a real-node LocalCluster, and Prometheus' HTTP API as the tests and the demo read it."""

    def __init__(self, cluster):
        self.cluster = cluster
        images = cluster.node_layer.images
        if "PROMETHEUS_IMAGE" not in images or not (BUILT / "bundle.yaml").exists():
            raise RuntimeError("the monitoring stack is not built: run `make monitoring`, then `make images`")
        self.images = images

    def install(self, timeout: float = 300) -> None:
        crds, names, rest = operator_manifests((BUILT / "bundle.yaml").read_text(),
                                               self.images["PROMETHEUS_OPERATOR_IMAGE"],
                                               self.images["PROMETHEUS_CONFIG_RELOADER_IMAGE"])
        # Every pod of the stack meets the restricted profile, as the product's own pods do.
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
        version = (BUILT / "prometheus-version").read_text().strip()
        # Server-side: the CRDs are larger than the last-applied annotation may be.
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
        self.cluster.wait_established(*(f"crd/{name}" for name in names))
        self._apply([namespace, *rest, *prometheus_manifests(self.images["PROMETHEUS_IMAGE"], version)])
        wait_for(self._ready, f"Prometheus {NAMESPACE}/{PROMETHEUS} Ready", timeout=timeout, interval=2,
                 explain=lambda: self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"))

    def install_operator_chart(self, s3: LocalS3, **rule) -> None:
        """The operator from its chart, as a pod (helm upgrade --install: again with other `rule` values), its
        metrics.* switched on for this Prometheus."""
        self._apply(destination_namespaces((OPERATOR_NAMESPACE,), s3))
        values = {**fit_operator_chart(self.images["OPERATOR_IMAGE"], s3.endpoint_url), "metrics": chart_metrics(**rule)}
        values["resources"]["requests"].pop("cpu")
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "values.json"
            path.write_text(json.dumps(values))
            self.cluster.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--values", str(path),
                      "--wait", "--timeout", "5m")

    def uninstall(self) -> None:
        """The chart and the stack (their CRDs stay, as CRDs do)."""
        self.uninstall_operator_chart()
        self.cluster.kubectl("delete", "namespace", OPERATOR_NAMESPACE, NAMESPACE, "--ignore-not-found", "--timeout=180s")
        self.cluster.kubectl("delete", "clusterrole,clusterrolebinding", "bernini-prometheus", "prometheus-operator",
                             "--ignore-not-found")

    def uninstall_operator_chart(self) -> None:
        self.cluster.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait",
                          "--timeout", "2m")

    def _apply(self, documents: list[dict]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))

    def _pod(self) -> dict | None:
        pods = json.loads(self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json",
                                               "-l", f"operator.prometheus.io/name={PROMETHEUS}"))["items"]
        return pods[0] if pods else None

    def _ready(self) -> bool:
        pod = self._pod()
        return bool(pod and pod["status"].get("podIP") and all(
            status["ready"] for status in pod["status"].get("containerStatuses", [{"ready": False}])))

    @functools.cached_property
    def url(self) -> str:
        """Read once: the StatefulSet's pod keeps its IP while the stack runs."""
        return f"http://{self._pod()['status']['podIP']}:9090"

    def api(self, path: str, **params: str) -> dict | list:
        """GET /api/v1/<path>; its data, or RuntimeError with Prometheus' error."""
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expression: str) -> list[dict]:
        """An instant query's vector: [{"metric": {labels}, "value": [time, "number"]}]."""
        return self.api("query", query=expression)["result"]

    def alerts(self, name: str) -> list[dict]:
        """The alerts of that name now (pending or firing), each with its labels and state."""
        return [alert for alert in self.api("alerts")["alerts"] if alert["labels"]["alertname"] == name]

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]
