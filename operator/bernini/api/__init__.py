"""The BerniniDeployment API: pydantic models that are the single source of truth for the CRD."""

from bernini.api.spec import BerniniDeploymentSpec
from bernini.api.status import BerniniDeploymentStatus, Condition

GROUP = "bernini.dev"
VERSION = "v1alpha1"
KIND = "BerniniDeployment"
PLURAL = "berninideployments"

__all__ = ["GROUP", "VERSION", "KIND", "PLURAL", "BerniniDeploymentSpec", "BerniniDeploymentStatus", "Condition"]
