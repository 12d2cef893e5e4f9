"""Noise corruptions of ImageNet-C (Hendrycks & Dietterich, ICLR 2019), as ``imagecorruptions``.

Threat model: natural (non-adversarial) sensor noise; severities 1-5 index the paper's tables.

Example::

    x2 = perturbations.create("shot_noise")(x, 3, ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import functools
import math

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
        return draw(rng, x.shape[1:], "normal", x.device).mul_(p[0]).add_(x)


@perturbations.register("speckle_noise")
class SpeckleNoise(Corruption):
    """Multiplicative noise ``x + x * N(0, c^2)``, c 0.15-0.6 over severities 1-5."""

    table = ((0.15,), (0.2,), (0.35,), (0.45,), (0.6,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        return draw(rng, x.shape[1:], "normal", x.device).mul_(p[0]).add_(1).mul_(x)


_BINS = 1024  # guide-table bins per grey level (a power of 2, so u * _BINS is exact)
_TABLE_MAX_C = 100.0  # larger photon counts (severities in (0, 1)) use torch.poisson


@functools.lru_cache(maxsize=16)
def _poisson_tables(c: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inversion tables of Poisson(c k / 255) for the 256 grey levels k.

    Returns the CDFs ``[256 * n]`` (float32, times ``_BINS``; values that round to 1 end the
    search) and a guide table ``[256 * _BINS]``: for level k and the bin [j, j + 1) / _BINS of the
    uniform u, the count ``g`` of CDF values <= j / _BINS -- the sample itself when no CDF value
    falls inside the bin, else ``-1 - g`` (the search then starts there).
    """
    lam = torch.arange(256, dtype=torch.float64) * (c / 255)
    n = int(c + 12 * math.sqrt(c) + 30)  # P(X >= n) < 1e-12
    k = torch.arange(n, dtype=torch.float64)
    pmf = torch.exp(
        k * torch.log(lam.clamp_min(1e-300))[:, None] - lam[:, None] - torch.lgamma(k + 1)
    )
    pmf[0] = 0.0
    pmf[0, 0] = 1.0
    cdf = pmf.cumsum(1).float()
    cdf[:, -1] = 2.0  # sentinel: u < 1 always stops here
    edges = (torch.arange(_BINS + 1, dtype=torch.float32) / _BINS).expand(256, -1).contiguous()
    g = torch.searchsorted(cdf, edges, right=True)  # #{n: F(n) <= j / _BINS}
    guide = torch.where(g[:, 1:] == g[:, :-1], g[:, :-1], -1 - g[:, :-1]).float()
    return guide.reshape(-1).to(device), cdf.mul(_BINS).reshape(-1).to(device), n


def _fill(gens: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Uniforms in [0, 1) shaped like ``like``, each example from its own generator."""
    u = torch.empty(like.shape, dtype=torch.float32, device=like.device)
    for o, g in zip(u, gens, strict=True):
        o.uniform_(generator=g)
    return u


def _small_poisson(r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Poisson(r) by inversion for small rates (here r < 0.4), one uniform ``u`` each."""
    r, u = r.double(), u.double()
    p = torch.exp(-r)
    cdf, out = p.clone(), torch.zeros_like(r)
    for n in range(1, 60):
        step = u >= cdf
        if not bool(step.any()):
            break
        out += step
        p = p * r / n
        cdf = cdf + p
    return out.to(torch.float32)


def poisson_counts(x: torch.Tensor, c: float, gens: list[torch.Generator]) -> torch.Tensor:
    """``Poisson(c * x)`` counts for ``x`` in [0, 1], each example from its own generator.

    Exact inversion through per-grey-level tables: x = (k + f) / 255 draws Poisson(c k / 255)
    from the guide table (one lookup; a short search for the ~1-3 % of uniforms that fall in a bin
    holding a CDF step) plus, where f > 1e-4 (off the 8-bit grid), Poisson(c f / 255) from a
    second uniform -- the sum of independent Poissons is Poisson(c x). Images that come from
    8-bit data never need the second part.
    """
    guide, cdf, n = _poisson_tables(float(c), x.device)
    s = torch.empty(x.shape, device=x.device)  # NCHW whatever the input's layout
    torch.mul(x, 255, out=s).clamp_(0, 255)
    level = s.add(1e-4).floor_()
    u = _fill(gens, x).mul_(_BINS)  # exact: _BINS is a power of 2
    out = guide.index_select(0, torch.floor(u).add_(level, alpha=_BINS).view(-1).int())
    hard = (out < 0).nonzero().squeeze(1)
    if len(hard):
        k = -1 - out[hard]
        uh = u.view(-1)[hard]
        base = level.view(-1)[hard].int() * n
        while True:
            step = uh >= cdf.index_select(0, base + k.int())
            if not bool(step.any()):
                break
            k += step
        out[hard] = k
    out = out.view_as(x)
    frac = s.sub_(level)
    if bool((frac > 1e-4).any()):  # off the 8-bit grid somewhere
        off = (frac > 1e-4).nonzero(as_tuple=True)
        u2 = _fill(gens, x)
        out[off] += _small_poisson(frac[off] * (c / 255), u2[off])
    return out


@perturbations.register("shot_noise")
class ShotNoise(Corruption):
    """Poisson (photon) noise ``Poisson(x * c) / c`` with c 60-3 photons over severities 1-5.

    Fractional severities interpolate ``1 / c`` (the noise variance scale); severity 0 is clean.
    Sampled by table inversion (:func:`poisson_counts`; ~6x faster than ``torch.poisson``).
    """

    table = ((1 / 60,), (1 / 25,), (1 / 12,), (1 / 5,), (1 / 3,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        c = 1.0 / p[0]
        gens = generators(rng, x.device)
        if c <= _TABLE_MAX_C:
            return poisson_counts(x, c, gens).div_(c)
        out = torch.empty_like(x)
        for o, r, g in zip(out, x.clamp(0, 1) * c, gens, strict=True):
            o.copy_(torch.poisson(r, generator=g))
        return out.div_(c)


@perturbations.register("impulse_noise")
class ImpulseNoise(Corruption):
    """Salt-and-pepper noise (skimage ``random_noise(mode='s&p')``): a fraction 0.03-0.27 of the
    values (per channel) set to 0 or 1 with equal odds."""

    table = ((0.03,), (0.06,), (0.09,), (0.17,), (0.27,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        # one draw: u < amount hits; given a hit, u / amount is uniform, so salt iff u < amount / 2.
        # On the integers k = floor(u 2^24) (u itself on CPU: 24-bit uniforms), u < t is
        # k < ceil(t 2^24), so both masks are clamps of k (faster than comparisons and where)
        k = draw(rng, x.shape[1:], "uniform", x.device).mul_(1 << 24).floor_()
        keep = (k - (math.ceil(p[0] * (1 << 24)) - 1)).clamp_(0, 1)  # u >= amount
        salt = k.sub_(math.ceil(p[0] / 2 * (1 << 24))).neg_().clamp_(0, 1)  # u < amount / 2
        return keep.mul_(x).add_(salt)
