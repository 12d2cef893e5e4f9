"""Steepest-ascent steps under an Lp norm (used by the gradient attacks)."""

from __future__ import annotations

import torch

from robustlab.core.types import Domain


def steepest_step(
    grad: torch.Tensor,
    x: torch.Tensor,
    norm: str,
    size: float,
    domain: Domain,
    l1_sparsity: float = 0.99,
) -> torch.Tensor:
    """The step of Lp-norm ``size`` that maximises the linearised loss.

    Linf: ``size * sign(grad)``. L2: ``size * grad / ||grad||``. L1: a sparse sign step spread over
    the top ``1 - l1_sparsity`` fraction of coordinates by ``|grad|`` (Tramer & Boneh's SLIDE),
    ignoring coordinates that sit on the domain boundary and point outwards.
    """
    if norm == "inf":
        return size * grad.sign()
    flat = grad.flatten(1)
    if norm == "2":
        n = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (size * flat / n).view_as(grad)
    xf = x.flatten(1)
    blocked = ((xf >= domain.hi) & (flat > 0)) | ((xf <= domain.lo) & (flat < 0))
    mag = flat.abs().masked_fill(blocked, 0)
    k = max(1, int(round((1 - l1_sparsity) * flat.shape[1])))
    thresh = mag.topk(k, dim=1).values[:, -1:]
    mask = (mag >= thresh) & (mag > 0)
    d = flat.sign() * mask
    d = d / d.abs().sum(dim=1, keepdim=True).clamp_min(1)
    return (size * d).view_as(grad)
