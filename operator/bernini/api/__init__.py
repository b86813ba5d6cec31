"""The BerniniDeployment API: pydantic models (spec.py, status.py) are the single source of truth for the CRD."""

GROUP = "bernini.dev"
VERSION = "v1alpha1"
KIND = "BerniniDeployment"
PLURAL = "berninideployments"
