"""Blur corruptions of ImageNet-C (Hendrycks & Dietterich, ICLR 2019), as ``imagecorruptions``.

Threat model: natural optical blur; severities 1-5 index the paper's tables (pixel units, as the
reference applies them at any image size). Big kernels run through the FFT, per-example kernels
(motion direction) in one batched FFT product.

Example::

    x2 = perturbations.create("motion_blur")(x, 3, ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.image._ops import (
    Corruption,
    chunk_size,
    conv_fft,
    conv_taps,
    draw,
    gaussian_filter,
    zoom_matrix,
)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage ``gaussian`` (truncate 4, border 'nearest') on every channel."""
    return gaussian_filter(x, sigma)


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """imagecorruptions' ``_motion_blur``: ``2r+1`` shifted copies along ``angle`` (degrees, one per
    example) with half-Gaussian weights, edge-replicated; taps beyond the image are dropped."""
    h, w = x.shape[-2:]
    width = 2 * radius + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = k / k.sum()
    a = torch.deg2rad(angle.double().cpu())[:, None]
    dy = -torch.ceil(i * torch.sin(a) - 0.5).long()  # [B, width]
    dx = -torch.ceil(i * torch.cos(a) - 0.5).long()
    ok = ((dy.abs() < h) & (dx.abs() < w)).long().cumprod(1).bool()
    zero = torch.zeros((), dtype=torch.long)
    return conv_taps(
        x, torch.where(ok, dy, zero), torch.where(ok, dx, zero), torch.where(ok, k, 0.0), "edge"
    )


def zoom_sum(x: torch.Tensor, zooms: list[float]) -> torch.Tensor:
    """Sum over ``zooms`` of imagecorruptions' ``clipped_zoom`` layers, as two matrix products
    (in chunks of examples on the CPU: the stacked layers are ``len(zooms)`` images each)."""
    b, c, h, w = x.shape
    z = len(zooms)
    mh = torch.cat([zoom_matrix(h, f, x.device) for f in zooms]).to(x.dtype)  # [Z*H, H]
    mw = torch.cat([zoom_matrix(w, f, x.device).T for f in zooms]).to(x.dtype)  # [Z*W, W]
    out = torch.empty(b, c, h, w, dtype=x.dtype, device=x.device)
    step = chunk_size(x, c * z * h * w)
    for i in range(0, b, step):
        xs = x[i : i + step]
        n = xs.shape[0] * c
        t = torch.matmul(mh, xs.reshape(n, h, w))  # [n, Z*H, W]
        t = t.view(n, z, h, w).transpose(1, 2).reshape(n * h, z * w)
        out[i : i + step] = (t @ mw).view(-1, c, h, w)
    return out


@perturbations.register("gaussian_blur")
class GaussianBlur(Corruption):
    """Gaussian blur with sigma 1-6 pixels over severities 1-5 (ImageNet-C extra corruptions)."""

    table = ((1.0,), (2.0,), (3.0,), (4.0,), (6.0,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        return gaussian_blur(x, p[0])


@perturbations.register("defocus_blur")
class DefocusBlur(Corruption):
    """Convolution with an anti-aliased disk of radius 3-10 px (cv2 border reflect-101)."""

    contiguous_input = True

    table = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
    identity = (0.0, 0.1)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        radius, alias = p
        half = 8 if radius <= 8 else math.ceil(radius)
        t = torch.arange(-half, half + 1, dtype=torch.float64)
        disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).double()
        disk = disk / disk.sum()
        g = torch.exp(-(torch.arange(-1, 2, dtype=torch.float64) ** 2) / (2 * alias**2))
        if radius > 8:  # cv2.GaussianBlur with ksize (5, 5)
            g = torch.exp(-(torch.arange(-2, 3, dtype=torch.float64) ** 2) / (2 * alias**2))
        g = g / g.sum()
        r = len(g) // 2
        d = F.pad(disk[None, None], (r, r, r, r), mode="reflect")
        d = F.conv2d(F.conv2d(d, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
        return conv_fft(x, d.to(x.device), half, half, "reflect101")


@perturbations.register("motion_blur")
class MotionBlur(Corruption):
    """Linear motion blur: radius 10-20 px, sigma 3-15, direction uniform in [-45, 45] degrees."""

    contiguous_input = True

    table = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
    identity = (0.0, 1.0)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        angle = rng.uniform(1, dtype=torch.float64)[:, 0] * 90 - 45
        return motion_blur(x, round(p[0]), p[1], angle)


@perturbations.register("zoom_blur")
class ZoomBlur(Corruption):
    """Mean of the image and centre zooms by 1 + k * step up to 1.11-1.31 over severities 1-5."""

    contiguous_input = True

    table = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
    identity = (1.0, 0.01)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        zooms = [float(z) for z in torch.arange(1, p[0], p[1], dtype=torch.float64)]
        return (x + zoom_sum(x, zooms)) / (len(zooms) + 1)


def _swap_sources(off: torch.Tensor, delta: int, hops: int = 4) -> torch.Tensor:
    """Flat source index per pixel of one round of the reference's sequential local swaps.

    The reference visits interior pixels from the bottom-right to the top-left (decreasing flat
    index), swapping each with a neighbour at offset ``off`` (``[B, 2, H, W]``, values in
    [-delta, delta)). The pixel at P ends up with the content of Q = P + off(P); if Q was visited
    before P (Q interior with a larger flat index), Q already holds the content of Q + off(Q), and
    so on: the chain is followed for up to ``hops`` steps, all pixels at once.
    """
    b, _, h, w = off.shape
    dev = off.device
    rows = torch.arange(h, device=dev)[:, None]
    cols = torch.arange(w, device=dev)[None, :]
    inner = ((rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)).flatten()
    flat = torch.arange(h * w, device=dev)
    nxt = torch.where(inner, flat + (off[:, 0] * w + off[:, 1]).view(b, -1), flat)
    cur, src = flat.expand(b, -1), nxt
    for _ in range(hops):
        cont = inner[src] & (src > cur)
        cur = torch.where(cont, src, cur)
        src = torch.where(cont, nxt.gather(1, src), src)
    return src.view(b, 1, h * w)


@perturbations.register("glass_blur")
class GlassBlur(Corruption):
    """Blur (sigma 0.7-1.5), then ``iterations`` rounds of local pixel swaps with neighbours up to
    ``delta`` px away (1-4), then blur again.

    The reference swaps pixels one at a time in a Python loop (46 s for a 224 px image); here each
    round is one gather whose sources follow the reference's swap chains (``_swap_sources``),
    which matches its statistics (see docs/vision-perturbations.md).
    """

    table = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
    identity = (0.0, 0.0, 0.0)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        sigma, delta, iters = p[0], round(p[1]), round(p[2])
        b, c, h, w = x.shape
        y = torch.floor(gaussian_blur(x, sigma) * 255) / 255  # the reference's uint8 step
        if delta > 0 and iters > 0:
            u = draw(rng, (iters, 2, h, w), "uniform", x.device)
            off = (u * 2 * delta).floor().long().clamp_max(2 * delta - 1) - delta
            for it in range(iters):
                idx = _swap_sources(off[:, it], delta).expand(b, c, h * w)
                y = y.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)
        return gaussian_blur(y, sigma)
