"""robustlab: measure, certify and improve the robustness of ML models.

Importing the package loads nothing heavy; ``robustlab.train`` is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from robustlab.training.api import train

        return train
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
