"""Built-in certifiers, registered in :data:`robustlab.core.registry.certifiers`."""

from robustlab.certify import smoothing  # noqa: F401
from robustlab.certify.base import Certifier
from robustlab.certify.smoothing import GaussianSmoothing

__all__ = ["Certifier", "GaussianSmoothing"]
