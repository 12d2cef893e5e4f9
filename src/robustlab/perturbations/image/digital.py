"""Digital corruptions of ImageNet-C: elastic transform, pixelate, JPEG (as ``imagecorruptions``).

Threat model: natural resampling/compression artefacts; severities 1-5 index the paper's tables.
JPEG is a batched baseline JPEG codec (YCbCr, 4:2:0 chroma, 8x8 DCT, the standard quantisation
tables scaled as libjpeg does, fancy upsampling) rather than Pillow's encoder; grey images code
the luma plane only (what Pillow's RGB round trip of a grey image amounts to).

Example::

    x2 = perturbations.create("jpeg_compression")(x, 3, ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.image._ops import (
    Corruption,
    draw,
    gaussian_kernel,
    sep_filter,
)

_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57]
_LUMA_Q += [69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55]
_LUMA_Q += [64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100]
_LUMA_Q += [103, 99]
_CHROMA_Q = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
_CHROMA_Q += [47, 66] + [99] * 38


_RGB2YCC = [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
_YCC2RGB = [[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]]


@functools.lru_cache(maxsize=64)
def _qtable(base: tuple[int, ...], quality: float) -> torch.Tensor:
    q = max(1, min(100, round(quality)))  # libjpeg's integer quality scaling
    scale = 5000 // q if q < 50 else 200 - 2 * q
    t = torch.floor((torch.tensor(base, dtype=torch.float64) * scale + 50) / 100)
    return t.clamp(1, 255).view(8, 8)


@functools.lru_cache(maxsize=1)
def _dct_matrix() -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.kron(d, d)


def _code_plane(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Quantise the 8x8 DCT blocks of planes ``[N, H, W]`` (H, W multiples of 8, level-shifted);
    the quantisation steps are folded into the forward and inverse DCT matrices."""
    n, h, w = p.shape
    k = _dct_matrix().to(p)  # [64, 64]: the 2-D DCT of a flattened 8x8 block
    qf = q.reshape(64).to(p)
    blk = p.view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(-1, 64)
    coef = (blk @ (k.T / qf)).round_()
    out = (coef @ (qf[:, None] * k)).view(n, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4)
    return out.reshape(n, h, w).add_(128).round_().clamp_(0, 255)


@functools.lru_cache(maxsize=32)
def _chroma_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n/2, n]`` 2x averaging and ``[n, n/2]`` libjpeg fancy (triangle) upsampling, which is
    bilinear with half-pixel centres and clamped edges."""
    half = n // 2
    down = torch.zeros(half, n, dtype=torch.float64)
    down[torch.arange(half), 2 * torch.arange(half)] = 0.5
    down[torch.arange(half), 2 * torch.arange(half) + 1] = 0.5
    src = ((torch.arange(n, dtype=torch.float64) + 0.5) / 2 - 0.5).clamp(0, half - 1)
    i0 = src.floor().long().clamp(max=max(half - 2, 0))
    f = src - i0
    up = torch.zeros(n, half, dtype=torch.float64)
    up[torch.arange(n), i0] += 1 - f
    up[torch.arange(n), (i0 + 1).clamp(max=half - 1)] += f
    return down, up


def _mean2x2(v: torch.Tensor) -> torch.Tensor:
    """2x2 block means of ``[..., H, W]`` (H, W even): libjpeg's chroma downsampling."""
    r = v[..., 0::2, :] + v[..., 1::2, :]
    return (r[..., 0::2] + r[..., 1::2]).mul_(0.25)


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    """Baseline JPEG round trip of ``[B, C, H, W]`` images in [0, 1] (C = 1 or 3)."""
    b, c, h, w = x.shape
    m = 16 if c == 3 else 8
    v = torch.empty(x.shape, device=x.device)  # NCHW whatever the input's layout
    torch.mul(x, 255, out=v).round_()
    if h % m or w % m:
        v = F.pad(v, (0, -w % m, 0, -h % m), mode="replicate")
    hp, wp = v.shape[-2:]
    ql, qc = _qtable(tuple(_LUMA_Q), quality), _qtable(tuple(_CHROMA_Q), quality)
    if c == 1:
        y = _code_plane(v[:, 0].sub_(128), ql)[:, None]
        return y[..., :h, :w].div(255).to(x.dtype)

    def mix(p: torch.Tensor, k: list[float]) -> torch.Tensor:  # k . (R, G, B), channel by channel
        return (p[:, 0] * k[0]).add_(p[:, 1], alpha=k[1]).add_(p[:, 2], alpha=k[2])

    yy = _code_plane(mix(v, _RGB2YCC[0]).round_().sub_(128), ql)
    # chroma of the 2x2 means (linear, so the mean of the chroma), already level-shifted
    q = _mean2x2(v)
    chroma = torch.stack([mix(q, _RGB2YCC[1]), mix(q, _RGB2YCC[2])], 1).round_()
    ch = _code_plane(chroma.view(2 * b, hp // 2, wp // 2), qc).view(b, 2, hp // 2, wp // 2)
    (_, uh), (_, uw) = (tuple(t.to(v) for t in _chroma_matrices(n)) for n in (hp, wp))
    cb_, cr_ = (uh @ ch @ uw.T).round_().sub_(128).unbind(1)
    out = torch.stack(
        [
            cr_.mul(_YCC2RGB[0][2]).add_(yy),
            cb_.mul(_YCC2RGB[1][1]).add_(cr_, alpha=_YCC2RGB[1][2]).add_(yy),
            cb_.mul(_YCC2RGB[2][1]).add_(yy),
        ],
        1,
    )
    return out.round_().clamp_(0, 255)[..., :h, :w].div_(255).to(x.dtype)


@perturbations.register("jpeg_compression")
class JpegCompression(Corruption):
    """JPEG at quality 25-7 over severities 1-5."""

    table = ((25,), (18,), (15,), (10,), (7,))
    identity = (100,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        return jpeg(x, p[0])


@functools.lru_cache(maxsize=64)
def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling weights ``[n_out, n_in]`` (Resample.c precompute_coeffs)."""
    scale = n_in / n_out
    fs = max(scale, 1.0)
    support = 0.5 * fs
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        t = (torch.arange(lo, hi, dtype=torch.float64) - center + 0.5) / fs
        m[xx, lo:hi] = ((t > -0.5) & (t <= 0.5)).double()
    return m / m.sum(1, keepdim=True).clamp_min(1e-12)


@perturbations.register("pixelate")
class Pixelate(Corruption):
    """Box-downsample to 0.6-0.25 of the size over severities 1-5, nearest-upsample back."""

    table = ((0.6,), (0.5,), (0.4,), (0.3,), (0.25,))
    identity = (1.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        h, w = x.shape[-2:]
        (dh, uh), (dw, uw) = _pixelate_matrices(h, p[0]), _pixelate_matrices(w, p[0])
        dh, uh, dw, uw = (m.to(x) for m in (dh, uh, dw, uw))
        return uh @ (dh @ x @ dw.T) @ uw.T


@functools.lru_cache(maxsize=64)
def _pixelate_matrices(n: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's BOX downsampling ``[m, n]`` to ``m = int(n * scale)`` and its NEAREST upsampling
    back ``[n, m]`` (source ``floor((i + 0.5) * m / n)``) as float32 matrices."""
    m = max(int(n * scale), 1)
    up = ((torch.arange(n) + 0.5) * (m / n)).long().clamp_max(m - 1)
    return _box_matrix(n, m).float(), F.one_hot(up, m).float()


@perturbations.register("elastic_transform")
class ElasticTransform(Corruption):
    """Elastic warp: uniform displacements (+-0.005 H) smoothed by a Gaussian of 0.01 of the size
    (truncate 3) and scaled by 12.5-30; bilinear, mirrored borders (scipy mode 'reflect').

    The resampling is ``grid_sample`` (bilinear, ``reflection`` padding, half-pixel centres):
    reflecting the coordinate about the image edge equals scipy's folding of both neighbours
    (the mirrored signal is symmetric about -0.5 and n - 0.5).
    """

    table = ((12.5,), (16.25,), (21.25,), (25.0,), (30.0,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        b, c, h, w = x.shape
        m = h * 0.005
        u = draw(rng, (2, h, w), "uniform", x.device, **{"from": -m, "to": m})
        kh, kw = gaussian_kernel(0.01 * h, 3.0, x.dtype), gaussian_kernel(0.01 * w, 3.0, x.dtype)
        d = sep_filter(u, kh, kw, "symmetric")  # [B, 2, H, W]: dx, dy (before the scale p[0])
        # grid_sample's normalised coordinates (align_corners=False): (2 * pos + 1) / n - 1
        cx = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
        cy = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
        grid = torch.stack(
            [d[:, 0].mul(2 * p[0] / w).add_(cx), d[:, 1].mul(2 * p[0] / h).add_(cy[:, None])], -1
        )
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
