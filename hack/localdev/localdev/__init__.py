"""The development harness: a real Kubernetes control plane on this machine, an S3 server, a Ray head and
the demo. Installed only into the development venv, never into the operator or serving images."""

from localdev import processes
from localdev.cluster import LocalCluster

__all__ = ["LocalCluster", "processes"]
