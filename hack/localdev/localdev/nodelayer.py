"""The real-node layer of a LocalCluster: node network, images, containerd + kubelet per node, kube-proxy,
CoreDNS, and the KubeRay operator and Traefik (the Gateway API implementation) running as pods, as Helm installs
would run them on EKS."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from localdev import nodenet, realnodes
from localdev.cluster import KUBERAY_FEATURE_GATES

IMAGES_SCRIPT = Path(__file__).resolve().parents[2] / "images" / "build.sh"
KUBERAY_NAMESPACE = "kuberay-system"
GATEWAY_NAMESPACE = "gateway-system"
GATEWAY_CLASS = "traefik"
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True}
S3_SECRET = "bernini-local-s3"  # per namespace: the local S3 server's keys, added to pods at admission


def build_images(log_file: Path) -> dict[str, str]:
    """Run hack/images/build.sh (cached by content) and return its KEY=value lines."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        result = subprocess.run(["bash", str(IMAGES_SCRIPT)], stdout=subprocess.PIPE, stderr=log, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the local images failed; see {log_file}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


class NodeLayer:
    def __init__(self, cluster, fleet: tuple[realnodes.RealNode, ...] | None = None):
        self.cluster = cluster
        self.fleet = fleet or realnodes.default_real_fleet()
        self.directory = cluster.state_dir / "nodes"
        self.images: dict[str, str] = {}

    def containerd(self, node: realnodes.RealNode) -> realnodes.Containerd:
        pause = self.images.get("PAUSE_IMAGE", "")
        return realnodes.Containerd(node.name, self.directory / node.name / "containerd",
                                    self.directory / node.name / "cni" / "net.d", pause)

    # -- before the apiserver starts: it binds the node network's host address ------------------------

    def prepare(self, progress: Callable[[str], None]) -> None:
        self.teardown()  # whatever a crashed run left (same fixed names)
        self.images = build_images(self.cluster.log_dir / "images.log")
        progress(f"images ready: {self.images['SERVING_IMAGE']}")
        nodenet.up([node.addressing for node in self.fleet])
        for node in self.fleet:
            realnodes.prepare_cgroup_root(node)

    # -- after the control plane is up ----------------------------------------------------------------

    def start(self, progress: Callable[[str], None]) -> None:
        cluster = self.cluster
        archives = {self.images[k.replace("ARCHIVE", "IMAGE")]: Path(v) for k, v in self.images.items() if k.endswith("ARCHIVE")}
        template = realnodes.template_store(Path(self.images["CACHE_DIR"]), self.images["BASE_KEY"], archives,
                                            self.images["PAUSE_IMAGE"])
        progress("image store ready")
        cluster.start_process("coredns", [cluster.binary("coredns"), "-conf",
                                          str(realnodes.corefile(self.directory / "coredns", cluster.kubeconfig))])
        proxy_config = realnodes.kube_proxy_config(self.directory / "kube-proxy", cluster.kubeconfig, self.fleet[0].name)
        cluster.start_process("kube-proxy", [cluster.binary("kube-proxy"), f"--config={proxy_config}", "--v=1"])
        for node in self.fleet:
            node_dir = self.directory / node.name
            containerd = self.containerd(node)
            realnodes.seed_from_template(template, containerd.directory)
            nodenet.write_cni_config(node.addressing, containerd.cni_dir)
            cluster.start_process(f"containerd-{node.name}", containerd.argv())
        for node in self.fleet:
            self.containerd(node).wait_ready(cluster.log_dir / f"containerd-{node.name}.log")
            node_dir = self.directory / node.name / "kubelet"
            config = realnodes.kubelet_config(node, self.containerd(node), node_dir, cluster.pki / "ca.crt")
            cluster.start_process(f"kubelet-{node.name}", realnodes.kubelet_argv(
                cluster.binary("kubelet"), node, config, node_dir, cluster.kubeconfig))
            # One at a time: every kubelet binds /var/lib/kubelet/device-plugins/kubelet.sock whatever its
            # --root-dir, and two binding at once failed one with "address already in use" (it exited).
            cluster.wait_until(lambda: node.name in self._nodes(), f"{node.name} to register", 120)
        for node in self.fleet:
            patch = realnodes.extended_resources_patch(node.shape)
            if patch:
                cluster.kubectl("patch", "node", node.name, "--subresource=status", "--type=json", "-p", json.dumps(patch))
        cluster.wait_until(self._all_ready, "every real node to be Ready", 120)
        progress(f"{len(self.fleet)} real nodes Ready ({', '.join(n.name for n in self.fleet)})")

    def _nodes(self) -> dict[str, dict]:
        listing = json.loads(self.cluster.kubectl("get", "nodes", "-o", "json"))
        return {item["metadata"]["name"]: item for item in listing["items"]}

    def _all_ready(self) -> bool:
        """Ready, and kubelet has carried the patched extended resources into allocatable."""
        nodes = self._nodes()

        def ready(node: realnodes.RealNode) -> bool:
            status = nodes.get(node.name, {}).get("status", {})
            conditions = status.get("conditions", [])
            allocatable = status.get("allocatable", {})
            return (any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                    and all(patch["path"].rsplit("/", 1)[1].replace("~1", "/") in allocatable
                            for patch in realnodes.extended_resources_patch(node.shape)))

        return all(ready(node) for node in self.fleet)

    def deploy_kuberay(self, progress: Callable[[str], None]) -> None:
        cluster = self.cluster
        role = yaml.safe_load((cluster.bin_dir.parent / "kuberay-rbac" / "role.yaml").read_text())
        manifests = kuberay_manifests(self.images["KUBERAY_IMAGE"], role) + s3_credentials_policy(S3_SECRET)
        cluster.kubectl("apply", "--server-side", "--field-manager=bernini-localcluster", "-f", "-",
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
        cluster.kubectl("rollout", "status", "deployment/kuberay-operator", "-n", KUBERAY_NAMESPACE, "--timeout=120s")

    def deploy_gateway(self, progress: Callable[[str], None]) -> None:
        """The Gateway API's standard CRDs, a GatewayClass and Traefik serving it; KubeRay makes each incremental
        RayService's Gateway and HTTPRoute, which Traefik programs."""
        cluster = self.cluster
        crds = (cluster.bin_dir.parent / "gateway-crds").resolve()
        cluster.kubectl("apply", "--server-side", "--field-manager=bernini-localcluster", "-f", str(crds))
        cluster.wait_established("crd", "--all")
        cluster.kubectl("apply", "--server-side", "--field-manager=bernini-localcluster", "-f", "-",
                        input=json.dumps({"apiVersion": "v1", "kind": "List",
                                          "items": gateway_manifests(self.images["TRAEFIK_IMAGE"])}))
        cluster.kubectl("rollout", "status", "deployment/traefik", "-n", GATEWAY_NAMESPACE, "--timeout=120s")
        progress(f"Traefik serving GatewayClass {GATEWAY_CLASS}")

    # -- teardown: after the cluster's own processes are stopped ---------------------------------------

    def teardown(self) -> None:
        for node in self.fleet:
            realnodes.kill_shims(node)
            realnodes.kill_cgroup_processes(node)
        realnodes.unmount_nodes(self.fleet)
        nodenet.down([node.addressing for node in self.fleet])
        nodenet.remove_kube_iptables_chains()


def kuberay_manifests(image: str, cluster_role: dict) -> list[dict]:
    """KubeRay as its Helm chart runs it: a Deployment with its own ServiceAccount and ClusterRole (taken from
    KubeRay's module), restricted pod security, on a CPU node."""
    labels = {"app.kubernetes.io/name": "kuberay-operator"}
    cluster_role = {**cluster_role, "metadata": {"name": "kuberay-operator"}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUBERAY_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "kuberay-operator", "namespace": KUBERAY_NAMESPACE}},
        cluster_role,
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kuberay-operator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kuberay-operator"},
         "subjects": [{"kind": "ServiceAccount", "name": "kuberay-operator", "namespace": KUBERAY_NAMESPACE}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "kuberay-operator", "namespace": KUBERAY_NAMESPACE, "labels": labels},
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": "kuberay-operator",
                      "securityContext": RESTRICTED_POD,
                      "containers": [{
                          "name": "kuberay-operator", "image": image, "imagePullPolicy": "Never",
                          "command": ["/ray-operator"],
                          "args": ["--enable-leader-election=false", "--log-stdout-encoder=console", KUBERAY_FEATURE_GATES,
                                   "--health-probe-bind-address=:8082", "--metrics-addr=:8080"],
                          "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8082}, "periodSeconds": 2},
                          "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
                          "securityContext": RESTRICTED_CONTAINER,
                      }],
                      "terminationGracePeriodSeconds": 5,
                  }}}},
    ]


def gateway_manifests(image: str) -> list[dict]:
    """Traefik as its Helm chart runs it for the Gateway API: read-only RBAC plus status writes, restricted pod
    security, a ClusterIP Service at a fixed address that Traefik writes into each Gateway's status (it reads a
    Service's address only from a LoadBalancer's status, which no controller fills in here). KubeRay's Gateways
    listen on port 80, and Traefik binds a listener to the entry point of that port: the pod may bind low
    ports through the safe sysctl instead of a capability."""
    labels = {"app.kubernetes.io/name": "traefik"}
    watched = ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants", "backendtlspolicies"]
    args = ["--entryPoints.web.address=:80", "--ping=true", "--log.level=INFO",
            "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
            "--providers.kubernetesGateway=true",
            f"--providers.kubernetesGateway.statusAddress.ip={nodenet.GATEWAY_SERVICE_IP}"]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik", "namespace": GATEWAY_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "traefik"},
         "rules": [
             {"apiGroups": [""], "resources": ["namespaces", "services", "secrets", "configmaps"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["gateway.networking.k8s.io"], "resources": watched, "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["gateway.networking.k8s.io"], "resources": [f"{kind}/status" for kind in watched],
              "verbs": ["update", "patch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "traefik"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "traefik"},
         "subjects": [{"kind": "ServiceAccount", "name": "traefik", "namespace": GATEWAY_NAMESPACE}]},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": GATEWAY_CLASS},
         "spec": {"controllerName": "traefik.io/gateway-controller"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "traefik", "namespace": GATEWAY_NAMESPACE},
         "spec": {"selector": labels, "clusterIP": nodenet.GATEWAY_SERVICE_IP,
                  "ports": [{"name": "web", "port": 80, "targetPort": 80}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "traefik", "namespace": GATEWAY_NAMESPACE, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": "traefik",
                      "securityContext": {**RESTRICTED_POD, "sysctls": [
                          {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                      "containers": [{
                          "name": "traefik", "image": image, "imagePullPolicy": "Never", "args": args,
                          "ports": [{"name": "web", "containerPort": 80}],
                          "readinessProbe": {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 2},
                          "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                          "securityContext": RESTRICTED_CONTAINER,
                      }],
                      "terminationGracePeriodSeconds": 5,
                  }}}},
    ]


# Who gets the local S3 keys at admission: the init container that pulls artifacts, and the chart's operator.
CREDENTIAL_TARGETS = {"pull-artifacts": "initContainers", "operator": "containers"}


def s3_credentials_policy(secret_name: str) -> list[dict]:
    """The local stand-in for EKS Pod Identity / IRSA: where EKS's webhook gives a pod's containers AWS
    credentials for its ServiceAccount, this MutatingAdmissionPolicy adds them from a Secret of the pod's
    namespace to the `pull-artifacts` init container and to the operator's container (the chart's
    Deployment). The rendered pod specs stay exactly what production gets; the credentials arrive at
    admission, as on EKS."""
    objects = []
    for container, field in CREDENTIAL_TARGETS.items():
        name = f"bernini-local-s3-credentials-{container}"
        env_type = f"Object.spec.{field}.env"
        index = f"'/spec/{field}/' + string(object.spec.{field}.map(c, c.name).indexOf('{container}'))"
        # One object per patch: the apiserver's CEL panics converting a list of typed objects (1.34.12).
        patches = [f'JSONPatch{{op: "add", path: {index} + "/env", value: []}}'] + [
            f'JSONPatch{{op: "add", path: {index} + "/env/-", value: {env_type}{{name: "{key}", valueFrom: '
            f'{env_type}.valueFrom{{secretKeyRef: {env_type}.valueFrom.secretKeyRef{{name: "{secret_name}", key: "{key}"}}}}}}}}'
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
        objects += [
            {"apiVersion": "admissionregistration.k8s.io/v1beta1", "kind": "MutatingAdmissionPolicy",
             "metadata": {"name": name},
             "spec": {
                 "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                         "operations": ["CREATE"], "resources": ["pods"]}]},
                 "matchConditions": [{"name": f"has-{container}",
                                      "expression": f"has(object.spec.{field}) && "
                                                    f"object.spec.{field}.exists(c, c.name == '{container}')"}],
                 "failurePolicy": "Fail",
                 "reinvocationPolicy": "Never",
                 "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": "[" + ", ".join(patches) + "]"}}],
             }},
            {"apiVersion": "admissionregistration.k8s.io/v1beta1", "kind": "MutatingAdmissionPolicyBinding",
             "metadata": {"name": name}, "spec": {"policyName": name}},
        ]
    return objects
