"""Object attribute edits given an object mask (S3: Li et al., "ImageNet-E: Benchmarking Neural
Network Robustness via Attribute Editing", CVPR 2023): background, size, position, direction.

Threat model: in-distribution edits of one attribute of the object, the rest kept. The mask is
``[B, 1, H, W]`` in [0, 1], passed as ``mask=`` (e.g. from a dataset's metadata), or derived by
thresholding: pixels whose grey level differs from the median of the image border by more than
``threshold`` (the object of a digit / Fashion-MNIST image on its flat background). Moving an
object fills the area it leaves with the background level (median border colour). Deterministic
except the new background of ``background_swap``, drawn per example from ``rng``.

Example::

    edit = perturbations.create("object_rotate")
    x2 = edit(x, 30.0, rng)                    # rotate each object 30 degrees about its centroid
    x3 = edit(x, 30.0, rng, mask=masks)        # with supplied masks
"""

from __future__ import annotations

import math

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Levels, NonNegative, Rate
from robustlab.perturbations.base import check_images
from robustlab.perturbations.image._ops import draw, gaussian_filter, luma
from robustlab.perturbations.image.geometric import _severity, affine_warp


def object_mask(x: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """``[B, 1, H, W]`` mask of pixels differing from the median border grey level by > threshold."""
    g = luma(x)
    border = torch.cat([g[..., 0, :], g[..., -1, :], g[..., :, 0], g[..., :, -1]], dim=-1)
    bg = border.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    return ((g - bg).abs() > threshold).to(x.dtype)


def _background(x: torch.Tensor) -> torch.Tensor:
    """Per-image median colour of the border, ``[B, C, 1, 1]``."""
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    return border.median(dim=-1).values[..., None, None]


class _Edit:
    modality = "image"

    def __init__(self, threshold: Rate = 0.1) -> None:
        self.threshold = threshold

    def _mask(self, x: torch.Tensor, mask: torch.Tensor | None, name: str) -> torch.Tensor:
        if mask is None:
            return object_mask(x, self.threshold)
        if mask.shape != (x.shape[0], 1, *x.shape[-2:]):
            raise ConfigError(
                f"{name}: mask must be [B, 1, H, W] = {(x.shape[0], 1, *x.shape[-2:])}"
            )
        return mask.to(x.device, x.dtype).clamp(0, 1)

    def __call__(
        self,
        x: torch.Tensor,
        severity: float | torch.Tensor,
        rng: ExampleRNG,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        name = getattr(self, "registered_name", type(self).__name__)
        check_images(x, name)
        s = _severity(severity, x.shape[0], name).to(x.device)
        if bool((s == 0).all()) or x.shape[0] == 0:
            return x.clone()
        out = self.apply(x, s, self._mask(x, mask, name), rng).clamp(0, 1).to(x.dtype)
        return torch.where((s == 0).view(-1, 1, 1, 1), x, out)

    def apply(
        self, x: torch.Tensor, s: torch.Tensor, m: torch.Tensor, rng: ExampleRNG
    ) -> torch.Tensor:
        raise NotImplementedError


class _Move(_Edit):
    """Warp the masked object about its centroid; fill where it was with the background level."""

    def warp(self, s: torch.Tensor, b: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def apply(
        self, x: torch.Tensor, s: torch.Tensor, m: torch.Tensor, rng: ExampleRNG
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2
        xs = torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2
        area = m.sum(dim=(1, 2, 3)).clamp_min(1e-6)
        c = torch.stack(
            [
                (m * xs).sum(dim=(1, 2, 3)) / area,
                (m * ys[:, None]).sum(dim=(1, 2, 3)) / area,
            ],
            1,
        )
        angle, scale, shift = self.warp(s, b, h, w)
        obj = affine_warp(x * m, angle, scale, shift, c, "zeros")
        m2 = affine_warp(m, angle, scale, shift, c, "zeros")
        cleared = x * (1 - m) + _background(x) * m
        return obj + (1 - m2) * cleared


@perturbations.register("object_scale")
class ObjectScale(_Move):
    """Scale the object about its centroid by ``1 + severity`` (-0.3: 70% of its size)."""

    severities = (-0.1, -0.2, -0.3, -0.4, -0.5)
    level_domain = Levels(-1, lo_open=True, what="severity (scale factor - 1)")

    def warp(self, s: torch.Tensor, b: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
        if bool((s <= -1).any()):
            raise ConfigError("object_scale: severity must be > -1 (factor 1 + severity)")
        return torch.zeros_like(s), 1 + s, torch.zeros(b, 2, device=s.device)


@perturbations.register("object_shift")
class ObjectShift(_Move):
    """Move the object by ``severity`` times the image size along ``direction`` (degrees, 0 = right)."""

    severities = (0.05, 0.1, 0.15, 0.2, 0.3)

    def __init__(self, threshold: Rate = 0.1, direction: float = 0.0) -> None:
        super().__init__(threshold)
        self.direction = direction

    def warp(self, s: torch.Tensor, b: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
        a = math.radians(self.direction)
        shift = torch.stack([s * w * math.cos(a), s * h * math.sin(a)], 1)
        return torch.zeros_like(s), torch.ones_like(s), shift


@perturbations.register("object_rotate")
class ObjectRotate(_Move):
    """Rotate the object about its centroid by ``severity`` degrees (counter-clockwise)."""

    severities = (10.0, 20.0, 45.0, 90.0, 180.0)

    def warp(self, s: torch.Tensor, b: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
        return s, torch.ones_like(s), torch.zeros(b, 2, device=s.device)


@perturbations.register("background_swap")
class BackgroundSwap(_Edit):
    """Blend a new background into the non-object pixels with weight ``severity`` in [0, 1]:
    ``texture`` = smooth random texture (Gaussian-blurred noise, sigma ``smooth`` px, per example)
    or ``noise`` (white noise)."""

    severities = (0.2, 0.4, 0.6, 0.8, 1.0)
    level_domain = Levels(0, 1, what="blend weight")

    def __init__(
        self, threshold: Rate = 0.1, kind: str = "texture", smooth: NonNegative = 2.0
    ) -> None:
        super().__init__(threshold)
        self.kind = kind
        self.smooth = smooth

    def apply(
        self, x: torch.Tensor, s: torch.Tensor, m: torch.Tensor, rng: ExampleRNG
    ) -> torch.Tensor:
        if self.kind not in ("texture", "noise"):
            raise ConfigError(
                f"background_swap: kind must be 'texture' or 'noise', got {self.kind!r}"
            )
        if bool(((s < 0) | (s > 1)).any()):
            raise ConfigError("background_swap: severity must lie in [0, 1]")
        bg = draw(rng, x.shape[1:], "uniform", x.device).to(x.dtype)
        if self.kind == "texture":
            bg = gaussian_filter(bg, self.smooth)
            lo, hi = bg.amin(dim=(2, 3), keepdim=True), bg.amax(dim=(2, 3), keepdim=True)
            bg = (bg - lo) / (hi - lo).clamp_min(1e-6)
        w = s.to(x.dtype).view(-1, 1, 1, 1) * (1 - m)
        return x * (1 - w) + bg * w
