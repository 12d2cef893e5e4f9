"""Blur corruptions, batched with depthwise convolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.base import check_images, param_at


def gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, all channels at once."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r = (len(k) - 1) // 2
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@perturbations.register("gaussian_blur")
class GaussianBlur:
    """Gaussian blur with sigma 1-6 pixels over severities 1-5 (ImageNet-C extra corruptions)."""

    modality = "image"
    severities = (1, 2, 3, 4, 5)
    table = (1.0, 2.0, 3.0, 4.0, 6.0)

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        check_images(x, "gaussian_blur")
        return gaussian_blur(x, param_at(self.table, severity, 0.0)).clamp(0, 1)
