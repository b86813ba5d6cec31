"""Real kubelet nodes on this machine: one containerd (runc) and one kubelet per node, one kube-proxy and
one CoreDNS for all of them, pods on per-node CNI bridges (see nodenet).

Each node has its own containerd (socket, root, state) and its own cgroup root: two kubelets sharing one
would garbage-collect each other's containers. Images are imported once into a template containerd root
cached by image digest; each node's root starts as a hard-linked copy of it (layers are read-only, so the
nodes share them on disk). containerd must clamp oom_score_adj (restrict_oom_score_adj): root here lacks
CAP_SYS_RESOURCE, and runc cannot lower the score of the pause container otherwise.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localdev import nodenet
from localdev.nodes import NodeShape
from localdev.waiting import wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")
SOCKETS = Path("/run/bernini")  # unix socket paths must stay short (containerd adds ".ttrpc"; limit 104)
IMAGES_NAMESPACE = "k8s.io"  # the CRI plugin only sees images in this containerd namespace


@dataclass(frozen=True)
class RealNode:
    name: str
    shape: NodeShape
    addressing: nodenet.NodeAddressing

    @property
    def cgroup_root(self) -> str:
        return f"/bernini-{self.name}"


def default_real_fleet() -> tuple[RealNode, ...]:
    from localdev.nodes import INF2_XLARGE, M6I_2XLARGE

    return (
        RealNode("real-cpu-1", M6I_2XLARGE, nodenet.NodeAddressing(1)),
        RealNode("real-inf2-1", INF2_XLARGE, nodenet.NodeAddressing(2)),
        RealNode("real-inf2-2", INF2_XLARGE, nodenet.NodeAddressing(3)),
        RealNode("real-cpu-2", M6I_2XLARGE, nodenet.NodeAddressing(4)),
        # A third: an incremental upgrade of two worker pods peaks at three (tests/realnodes/test_incremental.py).
        RealNode("real-inf2-3", INF2_XLARGE, nodenet.NodeAddressing(5)),
    )


def _containerd_config(directory: Path, socket: Path, cni_dir: Path, pause_image: str) -> str:
    text = subprocess.run(["containerd", "config", "default"], capture_output=True, text=True, check=True).stdout
    replacements = {
        'root = "/var/lib/containerd"': f'root = "{directory / "root"}"',
        'state = "/run/containerd"': f'state = "{directory / "state"}"',
        'address = "/run/containerd/containerd.sock"': f'address = "{socket}"',
        "restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
        "netns_mounts_under_state_dir = false": "netns_mounts_under_state_dir = true",
        'sandbox_image = "registry.k8s.io/pause:3.6"': f'sandbox_image = "{pause_image}"',
        'bin_dir = "/opt/cni/bin"': 'bin_dir = "/usr/lib/cni"',
        'conf_dir = "/etc/cni/net.d"': f'conf_dir = "{cni_dir}"',
        '            Root = ""': f'            Root = "{directory / "runc"}"',
    }
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(f"containerd's default config has no {old!r}; the harness needs updating")
        text = text.replace(old, new)
    return text


class Containerd:
    def __init__(self, name: str, directory: Path, cni_dir: Path, pause_image: str):
        self.directory = directory
        self.cni_dir = cni_dir
        self.pause_image = pause_image
        self.socket = SOCKETS / name / "containerd.sock"

    def argv(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.toml"
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(_containerd_config(self.directory, self.socket, self.cni_dir, self.pause_image))
        return [shutil.which("containerd") or "containerd", "--config", str(config)]

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", IMAGES_NAMESPACE, *args],
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def wait_ready(self, log: Path | None = None, timeout: float = 60) -> None:
        """Until the API answers and, given its log, the CRI plugin has started (kubelet exits at once on
        a CRI that is "not initialized yet")."""
        def answering() -> bool:
            return (self.socket.exists() and self.ctr("version", check=False).returncode == 0
                    and (log is None or "Start streaming server" in log.read_text(errors="replace")))

        wait_for(answering, f"containerd on {self.socket}", timeout, interval=0.1, failure=RuntimeError)

    def images(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())


def template_store(cache: Path, base_key: str, archives: dict[str, Path], pause_image: str) -> Path:
    """A containerd root holding every image of `archives` (reference -> docker-save tar). One store per
    serving base layer: a new app layer imports in seconds, since the 5 GiB base is already unpacked there."""
    store = cache / f"containerd-store-{base_key}"
    store.mkdir(parents=True, exist_ok=True)
    daemon = Containerd("template", store, store / "cni", pause_image)
    argv = daemon.argv()
    log_path = store / "containerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        daemon.wait_ready(log_path)
        for reference, archive in archives.items():
            if reference not in daemon.images():  # one archive may hold several references
                daemon.ctr("images", "import", str(archive))
                if reference not in daemon.images():
                    raise RuntimeError(f"importing {archive} did not give {reference}")
    finally:
        process.terminate()
        process.wait(30)
    for transient in ("state", "cni"):
        shutil.rmtree(store / transient, ignore_errors=True)
    return store


def seed_from_template(template: Path, directory: Path) -> None:
    """Each node's containerd root as hard links to the template's (read-only layers and blobs); the bolt
    databases (containerd's metadata, the overlay snapshotter's) are copied: each containerd writes and
    flocks its own."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(template / "root"), str(directory / "root")], check=True)
    for database in (directory / "root").rglob("*.db"):
        data = database.read_bytes()
        database.unlink()
        database.write_bytes(data)


def prepare_cgroup_root(node: RealNode) -> None:
    """kubelet refuses a --cgroup-root that does not exist in every v1 controller."""
    for controller in _v1_controllers():
        path = controller / node.cgroup_root.lstrip("/")
        path.mkdir(exist_ok=True)
        if controller.name == "cpuset":
            for key in ("cpuset.cpus", "cpuset.mems"):
                (path / key).write_text((controller / key).read_text())


def _v1_controllers() -> list[Path]:
    return [path for path in CGROUP_ROOT.iterdir() if path.is_dir() and not path.is_symlink()
            and path.name != "unified" and (path / "cgroup.procs").exists()]


def kill_cgroup_processes(node: RealNode) -> None:
    """SIGKILL every process left in the node's cgroups (containers, pause), then remove the cgroups."""
    for controller in _v1_controllers():
        root = controller / node.cgroup_root.lstrip("/")
        if not root.exists():
            continue
        for procs in root.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
    deadline = time.monotonic() + 10
    for controller in _v1_controllers():
        root = controller / node.cgroup_root.lstrip("/")
        if not root.exists():
            continue
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [root]:
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)


def kill_shims(node: RealNode) -> None:
    """containerd-shim-runc-v2 processes outlive containerd; kill the ones serving this node's containerd
    (this run's or a crashed earlier run's: the socket path ends the same way)."""
    marker = str(SOCKETS / node.name / "containerd.sock").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in command and marker in command:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def unmount_nodes(fleet: tuple[RealNode, ...]) -> None:
    """Every mount of the nodes' kubelets and containerds (kubelet's bind of its root dir, projected volumes,
    overlay rootfs, shm, netns files), this run's or a crashed earlier run's, deepest first."""
    markers = tuple(f"/nodes/{node.name}/" for node in fleet)
    mounts = [line.split()[1].replace("\\040", " ") for line in Path("/proc/mounts").read_text().splitlines()]
    mounts = [m for m in mounts if any(marker in m + "/" for marker in markers)]
    for mount in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def kubelet_config(node: RealNode, containerd: Containerd, directory: Path, ca_file: Path) -> Path:
    taints = node.shape.taints()
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{containerd.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "failSwapOn": False,
        "failCgroupV1": False,
        "address": node.addressing.node_ip,
        "port": 10250,
        "healthzBindAddress": node.addressing.node_ip,
        "healthzPort": 10248,
        "readOnlyPort": 0,
        # Only the apiserver (client cert from the cluster CA) may use the kubelet API.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [nodenet.HOST_IP],
        "clusterDomain": nodenet.CLUSTER_DOMAIN,
        "resolvConf": str(directory / "resolv.conf"),
        "podLogsDir": str(directory / "pod-logs"),  # the default /var/log/pods is shared, and each kubelet prunes it
        "registerWithTaints": taints,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        # Three nodes share two cores: CFS quotas would starve Ray's start (its processes give up after 30 s
        # waiting for each other); requests still share the CPU. Node setting only: pod specs are untouched.
        "cpuCFSQuota": False,
        "maxPods": 30,
    }
    directory.mkdir(parents=True, exist_ok=True)
    # Pods see only the cluster resolver (no host resolver: no name resolves outside the cluster).
    (directory / "resolv.conf").write_text(f"nameserver {nodenet.HOST_IP}\n")
    path = directory / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def kubelet_argv(binary: str, node: RealNode, config: Path, directory: Path, kubeconfig: Path) -> list[str]:
    labels = {**node.shape.labels(), "bernini.dev/real-node": "true"}
    return [
        binary, f"--config={config}", f"--kubeconfig={kubeconfig}", f"--root-dir={directory / 'root'}",
        f"--cert-dir={directory / 'pki'}", f"--hostname-override={node.name}", f"--node-ip={node.addressing.node_ip}",
        "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()), "--v=1",
    ]


def extended_resources_patch(shape: NodeShape) -> list[dict]:
    """The documented way to advertise extended resources: a JSON patch of the Node's status capacity."""
    return [{"op": "add", "path": f"/status/capacity/{name.replace('/', '~1')}", "value": count}
            for name, count in shape.extended_resources().items()]


def kube_proxy_config(directory: Path, kubeconfig: Path, hostname: str) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": str(nodenet.POD_NET),
        "hostnameOverride": hostname,
        "bindAddress": nodenet.HOST_IP,
        "healthzBindAddress": f"{nodenet.HOST_IP}:10256",
        "metricsBindAddress": f"{nodenet.HOST_IP}:10249",
        "conntrack": {"maxPerCore": 0},  # leave the host's conntrack table size alone
        "nodePortAddresses": [str(nodenet.NODE_NET)],  # never on the machine's own uplink
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kube-proxy.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def corefile(directory: Path, kubeconfig: Path) -> Path:
    """Cluster DNS only: no forward plugin, and other zones are refused, so no query leaves this machine."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "Corefile"
    path.write_text(
        f"{nodenet.CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{\n"
        f"    bind {nodenet.HOST_IP}\n"
        f"    errors\n"
        f"    kubernetes {nodenet.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {kubeconfig}\n"
        f"        pods insecure\n"
        f"    }}\n"
        f"}}\n"
    )
    return path

