"""The node network of the real-node cluster, made by the harness and removed by it.

- `bernini0`, a bridge with no ports (a stand-in for a dummy device): the apiserver, CoreDNS and the S3 server listen on HOST_IP, each node's kubelet
  on its own address; all from NODE_NET.
- one bridge per node for its pods (CNI bridge + host-local), pod subnet 10.244.<index>.0/24.
- `unreachable` routes for the whole node and pod ranges: an address in them that no device holds is refused
  on this machine instead of following the default route off it. The Service range routes into that
  portless device (which drops everything): connecting to a ClusterIP needs a route before kube-proxy's DNAT applies.
- pods get routes to the pod, Service and node ranges only (no default route), so nothing they send can leave.
"""

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEVICE = "bernini0"
NODE_NET = ipaddress.ip_network("10.245.0.0/24")
HOST_IP = "10.245.0.1"
POD_NET = ipaddress.ip_network("10.244.0.0/16")
SERVICE_NET = ipaddress.ip_network("10.96.0.0/16")
KUBERNETES_SERVICE_IP = "10.96.0.1"
GATEWAY_SERVICE_IP = "10.96.0.80"  # Traefik's Service: the address every Gateway's status gives
CLUSTER_DOMAIN = "cluster.local"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class NodeAddressing:
    index: int  # 1..200

    @property
    def node_ip(self) -> str:
        return str(NODE_NET.network_address + 10 + self.index)

    @property
    def bridge(self) -> str:
        return f"bnode{self.index}"

    @property
    def pod_subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"10.244.{self.index}.0/24")

    def cni_config(self, ipam_dir: Path) -> dict:
        gateway = str(self.pod_subnet.network_address + 1)
        return {
            "cniVersion": "1.0.0",
            "name": f"bernini-{self.bridge}",
            "plugins": [
                {
                    "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                    "ipam": {
                        "type": "host-local", "dataDir": str(ipam_dir),
                        "ranges": [[{"subnet": str(self.pod_subnet), "gateway": gateway}]],
                        "routes": [{"dst": str(POD_NET)}, {"dst": str(SERVICE_NET)}, {"dst": str(NODE_NET)}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }


def up(nodes: list[NodeAddressing]) -> None:
    down(nodes)
    run("ip", "link", "add", DEVICE, "type", "bridge")  # a portless bridge: this kernel has no dummy driver
    run("ip", "link", "set", DEVICE, "up")
    run("ip", "addr", "add", f"{HOST_IP}/32", "dev", DEVICE)
    for node in nodes:
        run("ip", "addr", "add", f"{node.node_ip}/32", "dev", DEVICE)
    for network in (NODE_NET, POD_NET):
        run("ip", "route", "replace", "unreachable", str(network))
    run("ip", "route", "replace", str(SERVICE_NET), "dev", DEVICE, "src", HOST_IP)
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
        Path("/proc/sys", key).write_text(value)


def down(nodes: list[NodeAddressing]) -> None:
    """Remove the devices up() and CNI made; safe to call when none of it exists. The ranges stay
    `unreachable`, so a late client of a stopped cluster fails here instead of dialling off the machine."""
    for node in nodes:
        run("ip", "link", "del", node.bridge, check=False)
    run("ip", "link", "del", DEVICE, check=False)  # takes the Service route with it
    for network in (NODE_NET, POD_NET, SERVICE_NET):
        run("ip", "route", "replace", "unreachable", str(network))


def write_cni_config(node: NodeAddressing, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "10-bernini.conflist"
    path.write_text(json.dumps(node.cni_config(directory.parent / "ipam"), indent=2))
    return path


def remove_kube_iptables_chains() -> None:
    """kube-proxy and kubelet add KUBE-* chains; drop the jumps to them, then the chains themselves."""
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = run(binary, "-t", table, "-S", check=False).stdout.splitlines()
            for rule in rules:
                if rule.startswith("-A ") and "KUBE-" in rule and not rule.split()[1].startswith("KUBE-"):
                    run(binary, "-t", table, *("-D" + rule[2:]).split(), check=False)
            chains = [line.split()[1] for line in rules if line.startswith("-N KUBE-")]
            for chain in chains:
                run(binary, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(binary, "-t", table, "-X", chain, check=False)
