"""Certified training with interval bound propagation (Gowal et al., 2018, arXiv:1810.12715).

Threat model: Linf balls of radius ``eps`` ∩ the input domain. Each step minimises

    kappa * CE(f(x), y) + (1 - kappa) * CE(z_hat(x, eps_t), y)

where ``z_hat_j`` is the IBP upper bound of ``z_j - z_y`` over the ball of radius ``eps_t`` (the
worst-case logits of Gowal et al., eq. 7, with the specification folded into the last layer) and
``z_hat_y = 0``. After ``warmup`` natural epochs, ``eps_t`` ramps linearly from 0 to
``eps_factor * eps`` and ``kappa`` from 1 to ``kappa_end`` over ``ramp`` epochs (the paper's
schedule: kappa 1 -> 0.5, training eps 1.1x the test eps). Networks must be IBP-traceable in
training mode: no BatchNorm (its batch statistics are not bounded here) and no Dropout.

This module holds the objective (:func:`ibp_loss`) and the ramp (:func:`schedule`); training runs
in robustlab's one training loop through the registered trainer ``ibp``
(:class:`robustlab.training.trainers.IBP`), and ``digits-mlp-ibp`` / ``digits-cnn-ibp`` are
``trained`` specs using it.

Example::

    clf = robustlab.train({"base": {"name": "mlp", "params": {"side": 8, "hidden": 32}},
                           "data": {"name": "digits", "params": {"split": "train"}},
                           "trainer": {"name": "ibp", "params": {"eps": 0.1}}, "epochs": 30})
    IntervalBounds(eps=0.1).certify(clf, x, y, rng=rng)   # many examples certified
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from robustlab.certify.ibp import Box, normalize, spec_margins
from robustlab.core.types import Domain


def schedule(step: int, total: int, warmup: int, ramp: int) -> float:
    """Ramp fraction in [0, 1]: 0 during ``warmup`` steps, then linear over ``ramp`` steps."""
    if step < warmup:
        return 0.0
    return 1.0 if ramp <= 0 else min(1.0, (step - warmup + 1) / ramp)


def ibp_loss(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    kappa: float,
    domain: Domain,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mixed natural / IBP worst-case cross-entropy of Gowal et al. (differentiable)."""
    box = Box.from_bounds((x - eps).clamp(min=domain.lo), (x + eps).clamp(max=domain.hi))
    box = normalize(box, mean, std)
    natural = F.cross_entropy(net(normalize(Box(x, torch.zeros_like(x)), mean, std).c), y)
    if kappa >= 1.0:
        return natural
    worst = -spec_margins(net, box, y)  # upper bounds of z_j - z_y; 0 at y
    return kappa * natural + (1 - kappa) * F.cross_entropy(worst, y)
