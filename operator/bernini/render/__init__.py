"""Pure renderers: a BerniniDeployment spec in, the desired Kubernetes objects out. No I/O."""
