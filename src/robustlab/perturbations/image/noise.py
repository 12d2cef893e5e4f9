"""Additive and impulse noise corruptions (ImageNet-C parameters, Hendrycks & Dietterich 2019)."""

from __future__ import annotations

import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.base import check_images, param_at


@perturbations.register("gaussian_noise")
class GaussianNoise:
    """Additive Gaussian noise, std 0.08-0.38 over severities 1-5, clipped to [0, 1]."""

    modality = "image"
    severities = (1, 2, 3, 4, 5)
    table = (0.08, 0.12, 0.18, 0.26, 0.38)

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        check_images(x, "gaussian_noise")
        c = param_at(self.table, severity, 0.0)
        noise = rng.normal(*x.shape[1:]).to(x.device, x.dtype)
        return (x + c * noise).clamp(0, 1)


@perturbations.register("impulse_noise")
class ImpulseNoise:
    """Salt-and-pepper noise: a fraction 0.03-0.27 of pixels set to 0 or 1."""

    modality = "image"
    severities = (1, 2, 3, 4, 5)
    table = (0.03, 0.06, 0.09, 0.17, 0.27)

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        check_images(x, "impulse_noise")
        amount = param_at(self.table, severity, 0.0)
        u = rng.uniform(*x.shape[1:]).to(x.device)
        salt = rng.uniform(*x.shape[1:]).to(x.device) < 0.5
        hit = u < amount
        out = torch.where(hit & salt, torch.ones_like(x), x)
        return torch.where(hit & ~salt, torch.zeros_like(x), out)
