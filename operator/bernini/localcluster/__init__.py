"""A real Kubernetes control plane on loopback, for tests, benchmarks and the demo (no Docker needed)."""

from bernini.localcluster import processes
from bernini.localcluster.cluster import LocalCluster

__all__ = ["LocalCluster", "processes"]
