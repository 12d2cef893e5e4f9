"""Noise corruptions of ImageNet-C (Hendrycks & Dietterich, ICLR 2019), as ``imagecorruptions``.

Threat model: natural (non-adversarial) sensor noise; severities 1-5 index the paper's tables.

Example::

    x2 = perturbations.create("shot_noise")(x, 3, ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.image._ops import Corruption, draw, generators


@perturbations.register("gaussian_noise")
class GaussianNoise(Corruption):
    """Additive Gaussian noise, std 0.08-0.38 over severities 1-5, clipped to [0, 1]."""

    table = ((0.08,), (0.12,), (0.18,), (0.26,), (0.38,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        return x + p[0] * draw(rng, x.shape[1:], "normal", x.device)


@perturbations.register("speckle_noise")
class SpeckleNoise(Corruption):
    """Multiplicative noise ``x + x * N(0, c^2)``, c 0.15-0.6 over severities 1-5."""

    table = ((0.15,), (0.2,), (0.35,), (0.45,), (0.6,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        return x + x * p[0] * draw(rng, x.shape[1:], "normal", x.device)


@perturbations.register("shot_noise")
class ShotNoise(Corruption):
    """Poisson (photon) noise ``Poisson(x * c) / c`` with c 60-3 photons over severities 1-5.

    Fractional severities interpolate ``1 / c`` (the noise variance scale); severity 0 is clean.
    """

    table = ((1 / 60,), (1 / 25,), (1 / 12,), (1 / 5,), (1 / 3,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        c = 1.0 / p[0]
        rate = x * c
        out = torch.empty_like(x)
        for o, r, g in zip(out, rate, generators(rng, x.device), strict=True):
            o.copy_(torch.poisson(r, generator=g))
        return out / c


@perturbations.register("impulse_noise")
class ImpulseNoise(Corruption):
    """Salt-and-pepper noise (skimage ``random_noise(mode='s&p')``): a fraction 0.03-0.27 of the
    values (per channel) set to 0 or 1 with equal odds."""

    table = ((0.03,), (0.06,), (0.09,), (0.17,), (0.27,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        u = draw(rng, x.shape[1:], "uniform", x.device)
        # one draw: u < amount hits; given a hit, u / amount is uniform, so salt iff u < amount / 2
        return torch.where(u < p[0], (u < p[0] / 2).to(x.dtype), x)
