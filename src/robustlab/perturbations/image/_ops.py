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
from robustlab.core.types import Levels
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


def pad_sides(
    x: torch.Tensor, top: int, bottom: int, left: int, right: int, mode: str
) -> torch.Tensor:
    """Pad the last two dims by the given (non-negative) amounts with border ``mode``.

    torch's native padding (``replicate`` for edge, ``reflect`` for reflect101) when it applies --
    ~8x faster on CPU than a gather -- else one gather with indices folded modulo the image.
    """
    h, w = x.shape[-2:]
    native = {"edge": "replicate", "reflect101": "reflect"}.get(mode)
    fits = max(top, bottom) < h and max(left, right) < w
    if x.dim() == 4 and x.is_floating_point() and native and (mode == "edge" or fits):
        return F.pad(x, (left, right, top, bottom), mode=native)
    ih = pad_index(h, max(top, bottom), mode, x.device)
    iw = pad_index(w, max(left, right), mode, x.device)
    ih = ih[max(top, bottom) - top : len(ih) - max(top, bottom) + bottom]
    iw = iw[max(left, right) - left : len(iw) - max(left, right) + right]
    return x[..., ih[:, None], iw[None, :]]


def pad2d(x: torch.Tensor, rh: int, rw: int, mode: str) -> torch.Tensor:
    return pad_sides(x, rh, rh, rw, rw, mode)


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
    """The smallest 2^a 3^b (b <= 2) >= n: MKL's fastest lengths (measured: 80 = 2^4 5 takes
    ~2x the time of 96 = 2^5 3; other factors are slower still)."""
    best = 1 << max(n - 1, 0).bit_length()
    for odd in (3, 9):
        m = odd
        while m < n:
            m *= 2
        best = min(best, m)
    return best


def conv_fft(x: torch.Tensor, kernel: torch.Tensor, rh: int, rw: int, mode: str) -> torch.Tensor:
    """Convolution ``out[p] = sum_s K[s] x[p - s]`` for offsets ``|s| <= (rh, rw)`` via the FFT.

    ``kernel`` is ``[B or 1, 1, 2rh+1, 2rw+1]`` with the zero offset at its centre.
    """
    kh, kw = kernel.shape[-2:]
    oy, ox = torch.meshgrid(
        torch.arange(-rh, kh - rh, device=x.device),
        torch.arange(-rw, kw - rw, device=x.device),
        indexing="ij",
    )
    k = kernel.reshape(kernel.shape[0], -1)
    return conv_taps(x, oy.reshape(1, -1), ox.reshape(1, -1), k, mode)


def conv_taps(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, weight: torch.Tensor, mode: str
) -> torch.Tensor:
    """``out[b, :, y, x] = sum_i weight[b, i] * x[b, :, y - dy[b, i], x - dx[b, i]]`` (borders by
    ``mode``), as one batched FFT product.

    ``dy``, ``dx``, ``weight`` are ``[B or 1, T]`` (int offsets, float weights). The image is
    padded straight to the FFT size, by exactly what the taps reach on each side: the circular
    convolution then never wraps into the kept window (no second, zero padding).
    """
    b, c, h, w = x.shape
    top, bottom = max(int(dy.max()), 0), max(-int(dy.min()), 0)
    left, right = max(int(dx.max()), 0), max(-int(dx.min()), 0)
    n1, n2 = fft_size(h + top + bottom), fft_size(w + left + right)
    pos = (dy.remainder(n1) * n2 + dx.remainder(n2)).to(x.device)
    kern = torch.zeros(weight.shape[0], n1 * n2, dtype=x.dtype, device=x.device)
    kern.scatter_add_(1, pos.expand(weight.shape[0], -1), weight.to(x))
    spec = torch.fft.rfft2(kern.view(-1, 1, n1, n2))
    out = torch.empty(b, c, h, w, dtype=x.dtype, device=x.device)
    step = chunk_size(x, c * n1 * n2)
    for i in range(0, b, step):
        xp = pad_sides(x[i : i + step], top, n1 - h - top, left, n2 - w - left, mode)
        y = torch.fft.irfft2(
            torch.fft.rfft2(xp).mul_(spec if len(spec) == 1 else spec[i : i + step]), s=(n1, n2)
        )
        out[i : i + step] = y[..., top : top + h, left : left + w]
    return out


CHUNK_ELEMENTS = 1 << 18


def chunk_size(x: torch.Tensor, per_example: int) -> int:
    """Examples per chunk for big per-example temporaries on the CPU (~1 MB of float32 each):
    chunks that stay in cache and are reused from the allocator run ~2x faster than one batch-
    sized buffer (fresh pages cost more than the arithmetic). Whole batch on other devices."""
    if x.device.type != "cpu":
        return max(x.shape[0], 1)
    return max(CHUNK_ELEMENTS // max(per_example, 1), 1)


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


SMALL_DRAW = 4096  # numbers per example up to which draw() hashes in one batched op


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
    """``[B, *shape]`` float32 draws (``normal`` or ``uniform``), each example from its own stream.

    Small draws (<= 4096 numbers per example, e.g. 8x8 digits) hash every element in one batched
    op (:meth:`ExampleRNG.normal`); larger ones fill each example from its own seeded generator,
    which is ~20x faster per element but costs a Python step per example."""
    n = math.prod(shape)
    if n <= SMALL_DRAW:
        if kind == "normal":
            return (
                rng.normal(*shape, device=device).mul_(kw.get("std", 1.0)).add_(kw.get("mean", 0.0))
            )
        lo, hi = kw.get("from", 0.0), kw.get("to", 1.0)
        return rng.uniform(*shape, device=device).mul_(hi - lo).add_(lo)
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
    level_domain = Levels(0, 5, what="severity")  # 0 = identity; fractions interpolate the table
    table: tuple[tuple[float, ...], ...] = ()
    identity: tuple[float, ...] = ()
    # copy strided inputs (e.g. a permuted HWC batch) to NCHW first: set where measured faster
    contiguous_input = False

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
        xf = x.float()
        if self.contiguous_input:
            xf = xf.contiguous()
        y = self.apply(xf, p, rng)
        if y.untyped_storage().data_ptr() == xf.untyped_storage().data_ptr():
            return y.clamp(0, 1).to(x.dtype)  # the input itself (or a view): never write to it
        return y.clamp_(0, 1).to(x.dtype)  # a fresh result: clamp in place (no extra buffer)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        raise NotImplementedError
