"""Gaussian-noise training objective (and consistency regularization) for randomized smoothing.

Randomized smoothing certifies ``g(x) = argmax_c P(f(x + e) = c)``; a base model ``f`` trained only on
clean inputs is near-random under noise, so ``g`` abstains. Cohen, Rosenfeld & Kolter (ICML 2019,
arXiv:1902.02918) train ``f`` on ``x + e``, ``e ~ N(0, sigma^2 I)`` *unclipped*, exactly the noise
the certifier adds. Consistency regularization (Jeong & Shin, NeurIPS 2020, arXiv:2006.04062) adds
``lambda * KL(mean_j p(x + e_j) || p(x + e_j))`` over ``m = 2`` noise draws, which makes the
smoothed prediction more stable and the certified radii larger.

``view="dual"`` trains for dual randomized smoothing (:mod:`robustlab.certify.dual`): each example
becomes one of its two column-interleaved half images, noised *in the half-image space* and up-sampled
back to full size, exactly as :class:`~robustlab.certify.dual.DualSmoothing` queries the model.

This module holds the objective only; training runs in robustlab's one training loop through the
registered trainer ``noise`` (:class:`robustlab.training.trainers.Noise`), and the registered
models ``digits-cnn-noise`` / ``digits-cnn-dual-noise`` are ``trained`` specs using it.

Example::

    clf = robustlab.train({"base": {"name": "small-cnn", "params": {"side": 8}},
                           "data": {"name": "digits", "params": {"split": "train"}},
                           "trainer": {"name": "noise", "params": {"sigma": 0.25}}, "epochs": 20})
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from robustlab.core.rng import ExampleRNG

VIEWS = ("full", "dual")


def noisy_views(
    x: torch.Tensor, sigma: float, view: str, rng: ExampleRNG, copies: int = 1
) -> torch.Tensor:
    """``copies`` noisy views of the batch stacked ``[copies * B, ...]``: ``x`` plus unclipped
    ``N(0, sigma^2)`` noise (``view="full"``), or one of its two half images (chosen per example),
    noised in the half-image space and up-sampled (``view="dual"``), as the certifier of ``view``
    presents inputs to the model. Draws come from ``rng``'s per-example streams."""
    from robustlab.certify.dual import split_halves, upsample_half

    views = []
    for _ in range(copies):
        if view == "full":
            views.append(x + sigma * rng.normal(*x.shape[1:], device=x.device))
            continue
        h0, h1 = split_halves(x)
        pick = rng.uniform(device=x.device).view(-1, *[1] * (x.dim() - 1)) < 0.5
        half = torch.where(pick, h1, h0)
        noise = rng.normal(*half.shape[1:], device=x.device)
        views.append(upsample_half(half + sigma * noise))
    return torch.cat(views)


def consistency_kl(logits: torch.Tensor) -> torch.Tensor:
    """Jeong & Shin's consistency term for ``logits`` ``[m, B, K]`` (m noise draws per example):
    the mean over draws and examples of KL(mean_j p_j || p_j)."""
    logp = logits.log_softmax(dim=-1)
    mean_p = logp.exp().mean(dim=0, keepdim=True)
    return (mean_p * (mean_p.clamp_min(1e-12).log() - logp)).sum(-1).mean()


def noise_loss(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    rng: ExampleRNG,
    sigma: float,
    consistency: float = 0.0,
    view: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on noisy views of ``x`` (two draws plus ``consistency`` x
    :func:`consistency_kl` when ``consistency > 0``); returns ``(loss, logits of the first draw)``."""
    copies = 2 if consistency > 0 else 1
    logits = logits_fn(noisy_views(x, sigma, view, rng, copies)).view(copies, len(x), -1)
    loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(copies))
    if consistency > 0:
        loss = loss + consistency * consistency_kl(logits)
    return loss, logits[0]
