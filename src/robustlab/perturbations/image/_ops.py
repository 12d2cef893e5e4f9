"""Batched image operations shared by the corruptions: padding, filtering, resampling, colour.

All functions take ``[B, C, H, W]`` float tensors and work for any size (padding indices are
computed modulo the image, so a 17x17 kernel works on an 8x8 image).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.base import check_images, param_at

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as cv2's RGB2GRAY and JPEG


def pad_index(n: int, r: int, mode: str, device: torch.device) -> torch.Tensor:
    """Indices of ``range(-r, n + r)`` folded into ``[0, n)``.

    ``edge`` repeats the border (scipy 'nearest'), ``symmetric`` mirrors including the border
    (scipy 'reflect'), ``reflect101`` mirrors excluding it (cv2's default, torch 'reflect').
    """
    i = torch.arange(-r, n + r, device=device)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        j = i.remainder(2 * n)
        return torch.where(j < n, j, 2 * n - 1 - j)
    j = i.remainder(2 * n - 2)
    return torch.where(j < n, j, 2 * n - 2 - j)


def pad2d(x: torch.Tensor, rh: int, rw: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    ih, iw = pad_index(h, rh, mode, x.device), pad_index(w, rw, mode, x.device)
    return x[..., ih[:, None], iw[None, :]]  # one gather (index_select is ~8x slower on CPU)


def gaussian_kernel(sigma: float, truncate: float, dtype: torch.dtype) -> torch.Tensor:
    """scipy.ndimage's Gaussian kernel: radius ``int(truncate * sigma + 0.5)``."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


@functools.lru_cache(maxsize=256)
def _filter_matrix(n: int, kernel: tuple[float, ...], mode: str) -> torch.Tensor:
    r = (len(kernel) - 1) // 2
    idx = pad_index(n, r, mode, torch.device("cpu"))
    rows = torch.arange(n)[:, None].expand(n, len(kernel))
    cols = idx[torch.arange(n)[:, None] + torch.arange(len(kernel))[None, :]]
    vals = torch.tensor(kernel, dtype=torch.float64).expand(n, len(kernel))
    m = torch.zeros(n, n, dtype=torch.float64)
    return m.index_put_((rows, cols), vals, accumulate=True)


def filter_matrix(n: int, kernel: torch.Tensor, mode: str, like: torch.Tensor) -> torch.Tensor:
    """``[n, n]`` matrix of a 1-D correlation with ``kernel`` under border ``mode`` (cached)."""
    return _filter_matrix(n, tuple(kernel.double().tolist()), mode).to(like)


def sep_filter(x: torch.Tensor, kh: torch.Tensor, kw: torch.Tensor, mode: str) -> torch.Tensor:
    """Separable correlation with 1-D kernels ``kh`` (rows) and ``kw`` (columns), borders folded
    into two banded matrices: two batched matrix products (much faster than conv2d on CPU)."""
    h, w = x.shape[-2:]
    return filter_matrix(h, kh, mode, x) @ x @ filter_matrix(w, kw, mode, x).T


def gaussian_filter(
    x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "edge"
) -> torch.Tensor:
    """skimage.filters.gaussian per channel (default mode 'nearest' = ``edge``)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma, truncate, x.dtype)
    return sep_filter(x, k, k, mode)


def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (FFT lengths with large prime factors are slow)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def conv_fft(x: torch.Tensor, kernel: torch.Tensor, rh: int, rw: int, mode: str) -> torch.Tensor:
    """Convolution ``out[p] = sum_s K[s] x[p - s]`` for offsets ``|s| <= (rh, rw)`` via the FFT.

    ``kernel`` is ``[B or 1, 1, 2rh+1, 2rw+1]`` with the zero offset at its centre. The padded
    image needs no wrap-around margin: outputs kept only read inputs within the padding.
    """
    h, w = x.shape[-2:]
    xp = pad2d(x, rh, rw, mode)
    size = (fft_size(xp.shape[-2]), fft_size(xp.shape[-1]))
    k = F.pad(kernel.to(x.dtype), (0, size[1] - kernel.shape[-1], 0, size[0] - kernel.shape[-2]))
    k = torch.roll(k, shifts=(-rh, -rw), dims=(-2, -1))
    y = torch.fft.irfft2(torch.fft.rfft2(xp, s=size) * torch.fft.rfft2(k), s=size)
    return y[..., rh : rh + h, rw : rw + w]


def zoom_matrix(n: int, z: float, device: torch.device) -> torch.Tensor:
    return _zoom_matrix(n, z).to(device)


@functools.lru_cache(maxsize=256)
def _zoom_matrix(n: int, z: float) -> torch.Tensor:
    """``[n, n]`` rows of imagecorruptions' ``clipped_zoom`` along one axis (centre crop of
    ``ceil(n / z)`` pixels, scipy ``zoom(order=1)`` back up, first ``n`` outputs kept)."""
    ch = math.ceil(n / z)
    top = (n - ch) // 2
    out_len = round(ch * z)
    m = torch.zeros(n, n, dtype=torch.float64)
    o = torch.arange(min(n, out_len), dtype=torch.float64)
    c = o * (ch - 1) / max(out_len - 1, 1)
    i0 = c.floor().long().clamp(max=max(ch - 2, 0))
    f = c - i0
    rows = torch.arange(len(o))
    m[rows, top + i0] += 1 - f
    m[rows, (top + i0 + 1).clamp(max=n - 1)] += f
    return m


def luma(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` grey level of RGB (or the single channel of grey) images."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def generators(rng: ExampleRNG, device: torch.device) -> list[torch.Generator]:
    """One torch generator per example, seeded (48 bits) from the example's stream.

    Filling each example's tensor from its own generator is ~20x faster than hashing every
    element, and still independent of the batch the example is in.
    """
    seeds = (rng.integers(1 << 24) * (1 << 24) + rng.integers(1 << 24)).tolist()
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def draw(
    rng: ExampleRNG, shape: Sequence[int], kind: str, device: torch.device, **kw: float
) -> torch.Tensor:
    """``[B, *shape]`` float32 draws (``normal`` or ``uniform``), each example from its own stream."""
    gens = generators(rng, device)
    out = torch.empty(len(gens), *shape, device=device)
    for o, g in zip(out, gens, strict=True):
        (o.normal_ if kind == "normal" else o.uniform_)(generator=g, **kw)
    return out


class Corruption:
    """Base of the ImageNet-C corruptions: severity table, checks, severity 0, clamping.

    Subclasses set ``table`` (one tuple of parameters per severity 1-5), ``identity`` (the
    parameters of severity 0, used to interpolate fractional severities in (0, 1)) and implement
    ``apply(x, params, rng)`` on float32 ``[B, C, H, W]`` images in [0, 1] with C in {1, 3}.
    """

    modality = "image"
    severities: tuple[float, ...] = (1, 2, 3, 4, 5)
    table: tuple[tuple[float, ...], ...] = ()
    identity: tuple[float, ...] = ()

    def params(self, severity: float) -> tuple[float, ...]:
        cols = zip(*self.table, strict=True)
        return tuple(param_at(col, severity, i) for col, i in zip(cols, self.identity, strict=True))

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        name = getattr(self, "registered_name", type(self).__name__)
        check_images(x, name)
        if x.shape[1] not in (1, 3):
            raise ConfigError(f"{name} needs 1 or 3 channels, got {x.shape[1]} (channels first?)")
        if len(rng) != x.shape[0]:
            raise ConfigError(f"{name}: rng has {len(rng)} streams for a batch of {x.shape[0]}")
        p = self.params(severity)
        if severity == 0 or x.shape[0] == 0:
            return x.clone()
        y = self.apply(x.float(), p, rng)
        return y.clamp(0, 1).to(x.dtype)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        raise NotImplementedError
