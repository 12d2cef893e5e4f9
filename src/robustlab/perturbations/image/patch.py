"""Patch-wise natural corruptions (S39: Gu et al., "Are Vision Transformers Robust to Patch
Perturbations?", ECCV 2022): corrupt k of the patches of a ``patch_size`` grid.

Threat model: a natural corruption confined to some input patches (e.g. one ViT token). The whole
image is corrupted with ``corruption`` at ``corruption_severity`` (its own random streams) and
pasted on the chosen patches only. ``severity`` is the fraction of patches (``count=False``,
rounded to the nearest whole patch) or their number (``count=True``); which patches is random per
example. Border patches of sizes not divisible by ``patch_size`` are partial patches.

Example::

    p = perturbations.create("patch_corruption", {"patch_size": 4, "corruption": "gaussian_noise"})
    x2 = p(x, 0.25, rng)          # a quarter of the 4x4 patches get severity-5 Gaussian noise
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Levels, PositiveInt
from robustlab.perturbations.base import check_images

EDIT_RATE_PATCHES = Levels(0, 1, what="fraction of patches")


@perturbations.register("patch_corruption")
class PatchCorruption:
    """Corrupt a random ``severity`` fraction (or count) of the patches of a square grid."""

    modality = "image"

    def __init__(
        self,
        corruption: str = "gaussian_noise",
        corruption_severity: float = 5,
        patch_size: PositiveInt = 4,
        count: bool = False,
    ) -> None:
        self.corruption = corruption
        self.corruption_severity = corruption_severity
        self.patch_size = patch_size
        self.count = count

    @staticmethod
    def level_domain(count: bool = False, **_: Any) -> Levels:
        """A fraction of the patches in [0, 1], or (``count``) a whole number of patches."""
        return Levels(0, integer=True, what="patch count") if count else EDIT_RATE_PATCHES

    @property
    def severities(self) -> tuple[float, ...]:
        return (1, 2, 4, 8, 16) if self.count else (0.05, 0.1, 0.25, 0.5, 1.0)

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        check_images(x, "patch_corruption")
        if not isinstance(self.patch_size, int) or self.patch_size < 1:
            raise ConfigError(
                f"patch_corruption: patch_size must be a positive int, got {self.patch_size!r}"
            )
        if self.corruption == "patch_corruption":
            raise ConfigError("patch_corruption: corruption cannot be patch_corruption itself")
        b, _, h, w = x.shape
        gh, gw = math.ceil(h / self.patch_size), math.ceil(w / self.patch_size)
        n = gh * gw
        limit = n if self.count else 1
        if not 0 <= severity <= limit:
            raise ConfigError(
                f"patch_corruption: severity must lie in [0, {limit}], got {severity}"
            )
        k = int(severity) if self.count else round(severity * n)
        if k == 0 or b == 0:
            return x.clone()
        base = perturbations.create(self.corruption)
        corrupted = base(x, self.corruption_severity, rng.fork("patch-corruption"))
        order = rng.permutation(n).to(x.device)  # the first k of each example's order are hit
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(n, device=x.device).expand(b, n)
        )
        hit = (rank < k).view(b, 1, gh, gw).to(x.dtype)
        mask = hit.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)
        mask = mask[..., :h, :w]
        return (mask * corrupted + (1 - mask) * x).to(x.dtype)
