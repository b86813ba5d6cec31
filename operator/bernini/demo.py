"""`make demo`: the product's main job on the embedded local control plane."""

from pathlib import Path

from bernini.localcluster import LocalCluster


def _ensure_cluster(root: Path) -> LocalCluster:
    cluster = LocalCluster.load(root)
    if cluster.pids and len(cluster.running_components()) == len(cluster.pids):
        print(f"[demo] reusing the running local cluster at {cluster.server}")
        return cluster
    cluster.down()
    seconds = cluster.up(progress=lambda message: print(f"[demo] {message}", flush=True))
    print(f"[demo] local cluster up in {seconds:.1f}s")
    return cluster


def run(root: Path) -> int:
    cluster = _ensure_cluster(root)
    print(cluster.kubectl("get", "nodes", "-L", "node.kubernetes.io/instance-type", "-o", "custom-columns="
          "NAME:.metadata.name,TYPE:.metadata.labels.node\\.kubernetes\\.io/instance-type,"
          "NEURONCORES:.status.allocatable.aws\\.amazon\\.com/neuroncore,"
          "NEURON:.status.allocatable.aws\\.amazon\\.com/neuron,TAINTS:.spec.taints[*].key"))
    print(f"[demo] the cluster keeps running; KUBECONFIG={cluster.kubeconfig.resolve()}; stop it with `make cluster-down`")
    return 0
