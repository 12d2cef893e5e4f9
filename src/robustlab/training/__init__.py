"""Training: the ``trainers`` registry's built-ins, the shared loop and ``train(spec)``.

See :mod:`robustlab.training.api` and docs/training.md.
"""

from robustlab.training.api import export, train

__all__ = ["export", "train"]
