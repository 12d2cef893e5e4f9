"""Perturbations: pure, batched, model-free transformations ``(x, severity, rng) -> x'``.

``severity`` is a level (1-5 for ImageNet-C-style corruptions, an edit rate for text); fractional
severities interpolate the parameter table; severity 0 is the identity. ``rng`` is an
:class:`~robustlab.core.rng.ExampleRNG` so the result for an example does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG


class Perturbation(Protocol):
    modality: str
    severities: tuple[float, ...]

    def __call__(self, x: Any, severity: float, rng: ExampleRNG) -> Any: ...


def param_at(table: Sequence[float], severity: float, identity: float) -> float:
    """Parameter for ``severity`` from a 1-based table, linearly interpolated; 0 -> ``identity``."""
    if severity < 0 or severity > len(table):
        raise ConfigError(f"severity must lie in [0, {len(table)}], got {severity}")
    pts = [identity, *table]
    lo = int(severity)
    if lo == len(table):
        return float(pts[-1])
    frac = severity - lo
    return float(pts[lo] * (1 - frac) + pts[lo + 1] * frac)


def check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{name} needs image batches [B, C, H, W], got {shape}")
