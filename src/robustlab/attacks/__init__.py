"""Built-in attacks (every module here is discovered by :data:`robustlab.core.registry.attacks`)."""

from robustlab.attacks.base import Goal, MarginMisclassified, Misclassified, Targeted

__all__ = ["Goal", "MarginMisclassified", "Misclassified", "Targeted"]
