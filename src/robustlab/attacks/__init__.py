"""Built-in attacks, registered in :data:`robustlab.core.registry.attacks`."""

from robustlab.attacks import fgsm, pgd  # noqa: F401
from robustlab.attacks.base import Goal, MarginMisclassified, Misclassified, Targeted

__all__ = ["Goal", "MarginMisclassified", "Misclassified", "Targeted"]
