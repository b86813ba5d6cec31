"""LocalCluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KubeRay, with either KWOK's fake
nodes (everything on loopback) or real kubelet nodes running containers (see nodelayer)."""

import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from localdev import certs, nodenet, nodes, processes
from localdev.waiting import wait_for

# KubeRay v1.6 ships incremental upgrades behind this alpha gate (on by default from v1.7).
KUBERAY_FEATURE_GATES = "--feature-gates=RayServiceIncrementalUpgrade=true"

REPO_ROOT = Path(__file__).resolve().parents[3]  # hack/localdev/localdev/cluster.py
DEFAULT_BIN_DIR = REPO_ROOT / ".local" / "bin"
POD_CIDR = "127.64.0.0/16"  # fake pod IPs stay on loopback, so nothing ever dials a real network
SERVICE_CIDR = "10.96.0.0/16"


class ClusterError(RuntimeError):
    pass


@dataclass
class LocalCluster:
    """A control plane whose state lives in state_dir; logs go to log_dir, the admin kubeconfig to kubeconfig."""

    state_dir: Path
    log_dir: Path
    kubeconfig: Path
    bin_dir: Path = DEFAULT_BIN_DIR
    tied_to_parent: bool = False
    fleet: tuple[tuple[str, nodes.NodeShape], ...] = nodes.DEFAULT_FLEET
    real_nodes: bool = False
    audit: bool = False  # one Metadata-level audit line per API request, in log_dir/audit.log (benchmarks)
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The kubeconfig names the PKI files, and kubectl resolves relative paths against the kubeconfig.
        self.state_dir, self.log_dir, self.kubeconfig = (
            Path(p).resolve() for p in (self.state_dir, self.log_dir, self.kubeconfig)
        )
        if self.real_nodes:
            from localdev.nodelayer import NodeLayer

            self.fleet = ()
            self.node_layer = NodeLayer(self)

    @classmethod
    def in_directory(cls, root: Path, **kwargs) -> "LocalCluster":
        return cls(root / "cluster", root / "logs", root / "kubeconfig", **kwargs)

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def _record(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def address(self) -> str:
        """Where the apiserver listens: loopback, or the node network's host address that pods reach."""
        return nodenet.HOST_IP if self.real_nodes else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports['apiserver']}"

    def binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise ClusterError(f"{path} is missing: run `make controlplane` first")
        return str(path.resolve())

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, progress: Callable[[str], None] = lambda _: None) -> float:
        """Start everything and return the seconds it took until nodes and KubeRay are ready."""
        if self._record.exists():
            raise ClusterError(f"a cluster is already recorded in {self._record}: run cluster-down first")
        started = time.monotonic()
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok", "kuberay-metrics", "kuberay-probe"):
            while (port := processes.free_port()) in self.ports.values():
                pass
            self.ports[name] = port
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._save_record()  # from here on down() knows what to clean, whatever fails
        certs.write_pki(self.pki, extra_ips=[nodenet.HOST_IP, nodenet.KUBERNETES_SERVICE_IP] if self.real_nodes else [])
        self._write_kubeconfig()
        try:
            if self.real_nodes:
                self.node_layer.prepare(progress)
            self._start("etcd", self._etcd_argv())
            self.wait_until(lambda: self._get(f"http://127.0.0.1:{self.ports['etcd']}/health"), "etcd", 30)
            progress("etcd healthy")
            self._start("kube-apiserver", self._apiserver_argv())
            self.wait_until(lambda: self._get(self.server + "/readyz"), "kube-apiserver /readyz", 60)
            progress(f"kube-apiserver ready at {self.server}")
            self._start("kube-controller-manager", self._controller_manager_argv())
            self._start("kube-scheduler", self._scheduler_argv())
            if not self.real_nodes:
                self._start("kwok", self._kwok_argv())
            with ThreadPoolExecutor(2) as pool:
                crds = pool.submit(self._install_kuberay_crds)
                fleet = pool.submit(self._create_nodes)
                crds.result()
                progress("KubeRay CRDs established")
                fleet.result()
            self.wait_until(self._default_service_account_exists, "the default ServiceAccount", 60)
            if self.real_nodes:
                self.node_layer.start(progress)
                self.node_layer.deploy_kuberay(progress)
                self.node_layer.deploy_gateway(progress)
            else:
                self._start("ray-operator", self._kuberay_argv(), env={"KUBECONFIG": str(self.kubeconfig)})
                self.wait_until(self._nodes_ready, "KWOK to mark every node Ready", 60)
                progress(f"{len(self.fleet)} nodes Ready")
                self.wait_until(
                    lambda: self._get(f"http://127.0.0.1:{self.ports['kuberay-probe']}/readyz"), "KubeRay /readyz", 60
                )
            progress("KubeRay operator ready")
        except Exception:
            self._save_record()
            raise
        self._save_record()
        return time.monotonic() - started

    def down(self) -> None:
        """Stop exactly the recorded processes and remove the cluster's state (logs stay for reading)."""
        if self._record.exists():
            record = json.loads(self._record.read_text())
            self.pids = {int(pid): exe for pid, exe in record["pids"].items()}
        processes.stop(self.pids)
        self.pids = {}
        if self.real_nodes:
            self.node_layer.teardown()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)

    @classmethod
    def load(cls, root: Path) -> "LocalCluster":
        probe = cls.in_directory(root)
        record = json.loads(probe._record.read_text()) if probe._record.exists() else {}
        cluster = cls.in_directory(root, real_nodes=record.get("realNodes", False))
        if record:
            cluster.ports = record["ports"]
            cluster.pids = {int(pid): exe for pid, exe in record["pids"].items()}
            if cluster.real_nodes:
                cluster.node_layer.images = record.get("images", {})
        return cluster

    def running_components(self) -> list[str]:
        return [Path(exe).name for pid, exe in self.pids.items() if processes.is_running(pid, exe)]

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for log in sorted(self.log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"==> {log} <==\n" + "\n".join(tail))
        return "\n".join(chunks)

    def start_process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start another process that belongs to this cluster's lifetime (stopped by down())."""
        pid = self._start(name, argv, env)
        self._save_record()
        return pid

    def adopt(self, pid: int, executable: str) -> None:
        self.pids[pid] = executable
        self._save_record()

    def stop_processes(self, pids: dict[int, str]) -> None:
        """Stop some of the cluster's own processes (a demo's operator, an earlier Argo CD) and drop them from
        the record: a stopped pid left there made the next command take the cluster for broken and restart it."""
        processes.stop(pids)
        for pid in pids:
            self.pids.pop(pid, None)
        self._save_record()

    # -- components ----------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None, executable: str | None = None) -> int:
        log = self.log_dir / f"{name}.log"
        log.unlink(missing_ok=True)
        pid = processes.start(argv, log, env=env, tied_to_parent=self.tied_to_parent)
        self.pids[pid] = executable or argv[0]
        return pid

    def _save_record(self) -> None:
        record = {"ports": self.ports, "pids": {str(pid): exe for pid, exe in self.pids.items()},
                  "realNodes": self.real_nodes}
        if self.real_nodes:
            record["images"] = self.node_layer.images  # a later command reusing the cluster names them
        self._record.write_text(json.dumps(record, indent=2))

    def _etcd_argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            self.binary("etcd"),
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        return [
            self.binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            # Published so the scheduler's and controller-manager's delegated authentication find it.
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            *self._node_facing_flags(),
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self._audit_flags(),
        ]

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "audit.log"

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                      "omitStages": ["RequestReceived", "ResponseStarted"],
                                      "rules": [{"level": "Metadata"}]}))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-maxsize=0"]

    def _node_facing_flags(self) -> list[str]:
        if not self.real_nodes:
            # The "kubernetes" Service cannot point at loopback; nothing on fake nodes needs it.
            return ["--endpoint-reconciler-type=none"]
        pki = self.pki
        return [
            # Pods reach the apiserver through the kubernetes Service (the Ray autoscaler does).
            "--endpoint-reconciler-type=lease",
            # logs/exec/port-forward dial the node IP; the node name resolves nowhere.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            # The local stand-in for EKS Pod Identity's credential injection (see nodelayer).
            "--feature-gates=MutatingAdmissionPolicy=true",
            "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
        ]

    def _component_kubeconfig_flags(self) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]

    def _controller_manager_argv(self) -> list[str]:
        return [
            self.binary("kube-controller-manager"),
            *self._component_kubeconfig_flags(),
            f"--secure-port={self.ports['controller-manager']}",
            f"--service-account-private-key-file={self.pki / 'service-account.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            self.binary("kube-scheduler"),
            *self._component_kubeconfig_flags(),
            f"--secure-port={self.ports['scheduler']}",
            "--v=1",
        ]

    def _kwok_argv(self) -> list[str]:
        stages = self.bin_dir.parent / "kwok-stages.yaml"
        if not stages.exists():
            raise ClusterError(f"{stages} is missing: run `make controlplane` first")
        return [
            self.binary("kwok"),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={stages.resolve()}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ]

    def _kuberay_argv(self) -> list[str]:
        return [
            self.binary("ray-operator"),
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{self.ports['kuberay-metrics']}",
            f"--health-probe-bind-address=127.0.0.1:{self.ports['kuberay-probe']}",
            "--log-stdout-encoder=console",
            KUBERAY_FEATURE_GATES,
        ]

    # -- cluster contents ----------------------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        pki = self.pki
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "bernini-local", "cluster": {"server": self.server, "certificate-authority": str(pki / "ca.crt")}}
                    ],
                    "users": [
                        {"name": "admin", "user": {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}}
                    ],
                    "contexts": [{"name": "bernini-local", "context": {"cluster": "bernini-local", "user": "admin"}}],
                    "current-context": "bernini-local",
                },
                indent=2,
            )
        )
        self.kubeconfig.chmod(0o600)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self._client("kubectl", *args, input=input)

    def helm(self, *args: str) -> str:
        return self._client("helm", *args)

    def _client(self, tool: str, *args: str, input: str | None = None) -> str:
        result = subprocess.run([self.binary(tool), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"{tool} {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """kubectl wait fails at once (rather than waits) while a fresh CRD has no status yet: poll it."""

        def established() -> bool:
            try:
                self.kubectl("wait", "--for=condition=Established", "--timeout=10s", *crds)
            except ClusterError:
                return False
            return True

        self.wait_until(established, f"{' '.join(crds)} to be Established", timeout)

    def _install_kuberay_crds(self) -> None:
        # Server-side: the RayCluster/RayService CRDs exceed the client-side apply annotation limit.
        crds = self.bin_dir.parent / "kuberay-crds"
        self.kubectl("apply", "--server-side", "--field-manager=bernini-localcluster", "-f", str(crds.resolve()))
        self.wait_established("crd", "--all")

    def _create_nodes(self) -> None:
        if not self.fleet:
            return
        manifests = [nodes.node_manifest(name, shape) for name, shape in self.fleet]
        self.kubectl("create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))

    def _nodes_ready(self) -> bool:
        listing = json.loads(self.kubectl("get", "nodes", "-o", "json"))
        ready = [
            node for node in listing["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        ]
        return len(ready) == len(self.fleet)

    def _default_service_account_exists(self) -> bool:
        try:
            self.kubectl("get", "serviceaccount", "default", "-n", "default")
        except ClusterError:
            return False
        return True

    # -- probes --------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def _get(self, url: str) -> bool:
        try:
            context = self._ssl_context() if url.startswith("https") else None
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        wait_for(lambda: ready() or self._check_alive(what), what, timeout, interval=0.1, failure=ClusterError,
                 explain=lambda: f"logs in {self.log_dir}")

    def _check_alive(self, what: str) -> None:
        dead = [Path(exe).name for pid, exe in self.pids.items() if not processes.is_running(pid, exe)]
        if dead:
            raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; see {self.log_dir}")
