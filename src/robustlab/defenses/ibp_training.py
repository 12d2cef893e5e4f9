"""Certified training with interval bound propagation (Gowal et al., 2018, arXiv:1810.12715).

Threat model: Linf balls of radius ``eps`` ∩ the input domain. Each step minimises

    kappa * CE(f(x), y) + (1 - kappa) * CE(z_hat(x, eps_t), y)

where ``z_hat_j`` is the IBP upper bound of ``z_j - z_y`` over the ball of radius ``eps_t`` (the
worst-case logits of Gowal et al., eq. 7, with the specification folded into the last layer) and
``z_hat_y = 0``. After ``warmup`` natural epochs, ``eps_t`` ramps linearly from 0 to
``eps_factor * eps`` and ``kappa`` from 1 to ``kappa_end`` over ``ramp`` epochs (the paper's
schedule: kappa 1 -> 0.5, training eps 1.1x the test eps). Networks must be IBP-traceable in
training mode: no BatchNorm (its batch statistics are not bounded here) and no Dropout.

Example::

    net = train_ibp(lambda: MLP(64, 32, 10), digits_train, seed=0, eps=0.1)
    clf = TorchClassifier(net, 10, Domain(0, 1, (1, 8, 8)))
    IntervalBounds(eps=0.1).certify(clf, x, y, rng=rng)   # many examples certified
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from robustlab.certify.base import require_int, require_positive
from robustlab.certify.ibp import Box, normalize, spec_margins
from robustlab.core.errors import ConfigError
from robustlab.core.types import Domain
from robustlab.data.base import Dataset


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


def train_ibp(
    make: Callable[[], nn.Module],
    data: Dataset,
    *,
    seed: int,
    eps: float = 0.1,
    epochs: int = 40,
    warmup: int = 3,
    ramp: int = 20,
    kappa_end: float = 0.5,
    eps_factor: float = 1.1,
    lr: float = 3e-3,
    batch_size: int = 64,
    domain: Domain | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Train ``make()`` with the IBP objective and eps / kappa ramps (Adam), seeded; eval mode out.

    ``warmup`` and ``ramp`` are in epochs; ``mean``/``std`` are the normalization the adapter will
    apply (pass the same to :class:`~robustlab.models.TorchClassifier`).
    """
    require_positive("train_ibp", eps=eps, eps_factor=eps_factor, lr=lr)
    require_int("train_ibp", 1, epochs=epochs, batch_size=batch_size)
    require_int("train_ibp", 0, warmup=warmup, ramp=ramp)
    if not 0 <= kappa_end <= 1:
        raise ConfigError(f"train_ibp: kappa_end must lie in [0, 1], got {kappa_end!r}")
    x, y = data.x, data.y
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError(f"train_ibp needs tensor data, got {type(x).__name__}")
    domain = domain or data.domain or Domain()
    m = None if mean is None else torch.as_tensor(mean, dtype=x.dtype)
    s = None if std is None else torch.as_tensor(std, dtype=x.dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = make()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    per_epoch = -(-len(x) // batch_size)
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            t = schedule(epoch * per_epoch + i // batch_size, epochs * per_epoch,
                         warmup * per_epoch, ramp * per_epoch)  # fmt: skip
            idx = perm[i : i + batch_size]
            loss = ibp_loss(net, x[idx], y[idx], t * eps_factor * eps,
                            1 - t * (1 - kappa_end), domain, m, s)  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()
