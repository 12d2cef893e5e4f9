"""Gaussian-noise training (and consistency regularization) so smoothed classifiers certify well.

Randomized smoothing certifies ``g(x) = argmax_c P(f(x + e) = c)``; a base model ``f`` trained only on
clean inputs is near-random under noise, so ``g`` abstains. Cohen, Rosenfeld & Kolter (ICML 2019,
arXiv:1902.02918) train ``f`` on ``x + e``, ``e ~ N(0, sigma^2 I)`` *unclipped*, exactly the noise
the certifier adds. Consistency regularization (Jeong & Shin, NeurIPS 2020, arXiv:2006.04062) adds
``lambda * KL(mean_j p(x + e_j) || p(x + e_j))`` over ``m = 2`` noise draws, which makes the
smoothed prediction more stable and the certified radii larger.

``view="dual"`` trains for dual randomized smoothing (:mod:`robustlab.certify.dual`): each example
becomes one of its two column-interleaved half images, noised *in the half-image space* and up-sampled
back to full size, exactly as :class:`~robustlab.certify.dual.DualSmoothing` queries the model.

Example::

    net = train_noisy(lambda: SmallCNN(1, 10, 8, 16), digits_train, seed=0, sigma=0.25)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from robustlab.core.errors import ConfigError
from robustlab.data.base import Dataset

VIEWS = ("full", "dual")


def noisy_view(x: torch.Tensor, sigma: float, view: str, g: torch.Generator) -> torch.Tensor:
    """``x`` plus unclipped Gaussian noise, as the certifier of ``view`` presents it to the model."""
    if view == "full":
        return x + sigma * torch.randn(x.shape, generator=g)
    from robustlab.certify.dual import split_halves, upsample_half

    halves = split_halves(x)
    which = torch.randint(0, 2, (x.shape[0],), generator=g).bool()
    half = torch.where(which.view(-1, *[1] * (x.dim() - 1)), halves[1], halves[0])
    return upsample_half(half + sigma * torch.randn(half.shape, generator=g))


def train_noisy(
    make: Callable[[], nn.Module],
    data: Dataset,
    *,
    seed: int,
    sigma: float = 0.25,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 64,
    consistency: float = 0.0,
    view: str = "full",
) -> nn.Module:
    """Train ``make()`` with cross-entropy on noisy inputs (Adam), deterministically under ``seed``.

    ``consistency > 0`` draws two noisy copies per example and adds ``consistency`` times the
    mean KL divergence of each copy's prediction from their average (Jeong & Shin, 2020).
    """
    if not sigma > 0:
        raise ConfigError(f"train_noisy: sigma must be > 0, got {sigma!r}")
    if consistency < 0:
        raise ConfigError(f"train_noisy: consistency must be >= 0, got {consistency!r}")
    if view not in VIEWS:
        raise ConfigError(f"train_noisy: view must be one of {VIEWS}, got {view!r}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = make()
    x, y = data.x, data.y
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    copies = 2 if consistency > 0 else 1
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = x[idx].repeat(copies, *[1] * (x.dim() - 1))
            logits = net(noisy_view(xb, sigma, view, g)).view(copies, len(idx), -1)
            loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(copies))
            if consistency > 0:
                logp = logits.log_softmax(dim=-1)
                mean_p = logp.exp().mean(dim=0, keepdim=True)
                kl = (mean_p * (mean_p.clamp_min(1e-12).log() - logp)).sum(-1).mean()
                loss = loss + consistency * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()
