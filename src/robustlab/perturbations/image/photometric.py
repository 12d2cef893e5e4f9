"""Photometric corruptions: contrast and brightness (ImageNet-C parameters)."""

from __future__ import annotations

import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.base import check_images, param_at


@perturbations.register("contrast")
class Contrast:
    """Scale pixel deviations from the per-image mean by 0.4-0.05 over severities 1-5."""

    modality = "image"
    severities = (1, 2, 3, 4, 5)
    table = (0.4, 0.3, 0.2, 0.1, 0.05)

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        check_images(x, "contrast")
        c = param_at(self.table, severity, 1.0)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * c + mean).clamp(0, 1)


@perturbations.register("brightness")
class Brightness:
    """Raise brightness by 0.1-0.5 over severities 1-5 (value channel for RGB), clipped to [0, 1]."""

    modality = "image"
    severities = (1, 2, 3, 4, 5)
    table = (0.1, 0.2, 0.3, 0.4, 0.5)

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        check_images(x, "brightness")
        c = param_at(self.table, severity, 0.0)
        if x.shape[1] != 3:
            return (x + c).clamp(0, 1)
        # HSV value shift: scaling the RGB vector keeps hue and saturation
        v = x.amax(dim=1, keepdim=True)
        new_v = (v + c).clamp(max=1.0)
        scaled = x * (new_v / v.clamp_min(1e-8))
        return torch.where(v > 0, scaled, new_v.expand_as(x)).clamp(0, 1)  # black -> gray
