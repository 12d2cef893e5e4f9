"""Continuous geometric and photometric transforms (natural transformations, S23; Engstrom et al.
2019 "Exploring the landscape of spatial robustness").

The severity *is* the physical parameter, any real number (0 = identity), so a worst-case search
over it (worst-of-k, grid search) is a loop over severities; a ``[B]`` tensor of severities gives
every example its own parameter in one batched call. Threat model: a rotation angle, shift or
scale factor, or brightness offset chosen within a range; no randomness (``rng`` is unused).

Example::

    rot = perturbations.create("rotate")
    worst = [rot(x, a, rng) for a in torch.linspace(-30, 30, 13).tolist()]   # degrees
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Levels
from robustlab.perturbations.base import check_images

PADDING = ("zeros", "border", "reflection")


def affine_warp(
    x: torch.Tensor,
    angle: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    center: torch.Tensor | None = None,
    padding: str = "zeros",
) -> torch.Tensor:
    """Rotate by ``angle`` degrees (counter-clockwise), scale by ``scale`` about ``center`` (pixel
    offsets [B, 2] (x, y) from the image centre; default the centre), then shift by ``shift``
    pixels [B, 2] (x right, y down). All per example; bilinear ``grid_sample``."""
    b, _, h, w = x.shape
    dev = x.device
    a = torch.deg2rad(angle.to(dev, torch.float64))
    cos, sin = torch.cos(a), torch.sin(a)
    # forward map (pixels, y down): q -> c + s R (q - c) + d; R rotates counter-clockwise on screen
    r_inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    m_inv = r_inv / scale.to(dev, torch.float64)[:, None, None]
    d = torch.diag(torch.tensor([w / 2, h / 2], dtype=torch.float64, device=dev))
    d_inv = torch.linalg.inv(d)
    c = torch.zeros(b, 2, dtype=torch.float64, device=dev) if center is None else center.double()
    t = c - (m_inv @ (c + shift.to(dev, torch.float64))[..., None])[..., 0]
    theta = torch.cat([d_inv @ m_inv @ d, (d_inv @ t[..., None])], dim=2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _severity(s: float | torch.Tensor, b: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(s, dtype=torch.float64).flatten()
    if t.numel() not in (1, b) or not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{name}: severity must be a finite number or one per example, got {s!r}")
    return t.expand(b).clone()


class _Transform:
    modality = "image"
    unit = ""

    def __init__(self, padding: str = "zeros", direction: float = 0.0) -> None:
        self.padding = padding
        self.direction = direction

    def __call__(
        self, x: torch.Tensor, severity: float | torch.Tensor, rng: ExampleRNG | None = None
    ) -> torch.Tensor:
        name = getattr(self, "registered_name", type(self).__name__)
        check_images(x, name)
        if self.padding not in PADDING:
            raise ConfigError(f"{name}: padding must be one of {PADDING}, got {self.padding!r}")
        s = _severity(severity, x.shape[0], name)
        if bool((s == 0).all()):
            return x.clone()
        s = s.to(x.device)
        out = self.apply(x, s).clamp(0, 1).to(x.dtype)
        return torch.where((s == 0).view(-1, 1, 1, 1), x, out)  # exact identity per example

    def apply(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@perturbations.register("rotate")
class Rotate(_Transform):
    """Rotate about the centre by ``severity`` degrees (counter-clockwise; negative: clockwise)."""

    severities = (5.0, 10.0, 15.0, 30.0, 45.0)

    def apply(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(len(s), 2, device=x.device)
        return affine_warp(x, s, torch.ones_like(s), zero, padding=self.padding)


@perturbations.register("translate")
class Translate(_Transform):
    """Shift by ``severity`` times the image size along ``direction`` (degrees; 0 = right,
    90 = down), e.g. 0.1 moves a 28 px image by 2.8 px; bilinear for fractional pixels."""

    severities = (0.05, 0.1, 0.15, 0.2, 0.3)

    def apply(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        a = math.radians(self.direction)
        shift = torch.stack([s * w * math.cos(a), s * h * math.sin(a)], dim=1)
        return affine_warp(x, torch.zeros_like(s), torch.ones_like(s), shift, padding=self.padding)


@perturbations.register("scale")
class Scale(_Transform):
    """Scale about the centre by the factor ``1 + severity`` (-0.3: shrink to 70%; 0.5: 150%)."""

    severities = (-0.1, -0.2, -0.3, -0.4, -0.5)
    level_domain = Levels(-1, lo_open=True, what="severity (scale factor - 1)")

    def apply(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if bool((s <= -1).any()):
            raise ConfigError(
                f"scale: severity must be > -1 (factor 1 + severity), got {s.min():g}"
            )
        zero = torch.zeros(len(s), 2, device=x.device)
        return affine_warp(x, torch.zeros_like(s), 1 + s, zero, padding=self.padding)


@perturbations.register("brightness_shift")
class BrightnessShift(_Transform):
    """Add ``severity`` (in [-1, 1]) to every pixel, clipped to [0, 1]."""

    severities = (0.1, 0.2, 0.3, 0.4, 0.5)
    level_domain = Levels(-1, 1, what="brightness shift")

    def apply(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x + s.to(x.dtype).view(-1, 1, 1, 1)
