"""Contract check for attacks."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import (
    AttackResult,
    ThreatModel,
    lp_norm,
)
from robustlab.testing.common import ATOL, _flags, _ids, _like, _perm, _rng, _same, _unchanged


def check_attack(
    attack: Any,
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
    ids: torch.Tensor | None = None,
    tol: float = 1e-5,
    strength: bool = True,
) -> AttackResult:
    """Check an (untargeted) attack's contract on ``x, y``; return its result.

    Invariants: ``x_adv`` within ``threat.eps`` of ``x`` in the threat norm (up to ``tol`` relative
    to ``max(1, eps)``) and inside ``model.domain``; ``x_adv`` keeps shape, dtype and device;
    ``success`` is bool ``[B]`` and agrees with ``argmax model.logits(x_adv) != y``; ``queries`` is
    int64 ``[B]`` and ``>= 0``; inputs are not mutated; the same seed gives the same result; a shuffled
    sub-batch (with its ids) gets the same results as in the full batch.

    Strength (``strength=True``; use a trained model and a batch it mostly classifies correctly):
    the attack must beat random noise of the same size, i.e. a random direction scaled to each
    example's own distance ``||x_adv - x||`` in the threat norm (random signs for Linf) and clipped
    to the domain. It must fool at least as many examples, and its mean margin loss
    ``max_{j != y} z_j - z_y`` must be higher. An attack that steps against the gradient, or
    returns its input, fails this.
    """
    ids = _ids(x, ids)
    name = f"attack {getattr(attack, 'registered_name', type(attack).__name__)} ({threat.norm})"
    x0, y0 = x.clone(), y.clone()
    res = attack(model, x, y, threat, rng=_rng(seed, ids))
    _unchanged(x0, x, f"{name} (x)")
    _unchanged(y0, y, f"{name} (y)")
    assert isinstance(res, AttackResult), f"{name} returned {type(res).__name__}, not AttackResult"
    _like(res.x_adv, x, f"{name} x_adv")
    b = x.shape[0]
    _flags(res.success, b, torch.bool, f"{name} success")
    _flags(res.queries, b, torch.int64, f"{name} queries")
    assert bool((res.queries >= 0).all()), f"{name} reports negative query counts"
    assert bool(torch.isfinite(res.x_adv).all()), f"{name} x_adv contains NaN or inf"
    dist = threat.distance(res.x_adv.double(), x.double())
    slack = tol * max(1.0, threat.eps)
    far = (dist > threat.eps + slack).nonzero().flatten()
    assert far.numel() == 0, (
        f"{name} left the eps-ball: {far.numel()} of {b} examples at L{threat.norm} distance > "
        f"eps={threat.eps:g} (worst {float(dist.max()):.6g}, example {int(dist.argmax())})"
    )
    dom = model.domain
    lo, hi = float(res.x_adv.min()), float(res.x_adv.max())
    assert lo >= dom.lo - tol and hi <= dom.hi + tol, (
        f"{name} left the model's domain [{dom.lo:g}, {dom.hi:g}]: x_adv in [{lo:.6g}, {hi:.6g}]"
    )
    with torch.no_grad():
        fooled = (model.logits(res.x_adv).argmax(dim=1).cpu() != y.cpu()).to(torch.bool)
    wrong = (fooled != res.success.cpu()).nonzero().flatten()
    assert wrong.numel() == 0, (
        f"{name} success flag disagrees with the model's prediction on x_adv for {wrong.numel()} "
        f"of {b} examples (first: example {int(wrong[0]) if wrong.numel() else -1})"
    )
    again = attack(model, x, y, threat, rng=_rng(seed, ids))
    _same(again.x_adv, res.x_adv, f"{name} is not deterministic under a seed (x_adv)", ATOL)
    _same(again.success, res.success, f"{name} is not deterministic under a seed (success)")
    _same(again.queries, res.queries, f"{name} is not deterministic under a seed (queries)")
    p = _perm(b, seed)
    perm = attack(model, x[p], y[p], threat, rng=_rng(seed, ids[p]))
    what = f"{name} is not batch-order invariant (shuffled sub-batch)"
    _same(perm.x_adv, res.x_adv[p], f"{what} (x_adv)", ATOL)
    _same(perm.success, res.success[p.to(res.success.device)], f"{what} (success)")
    _same(perm.queries, res.queries[p.to(res.queries.device)], f"{what} (queries)")
    if strength:
        _check_strength(model, x, y, res, threat, seed, ids, name)
    return res


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``max_{j != y} z_j - z_y`` (positive: misclassified)."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    return logits.scatter(1, y[:, None], -float("inf")).amax(dim=1) - zy


def same_size_noise(
    x: torch.Tensor, x_adv: torch.Tensor, norm: str, rng: ExampleRNG, domain: Any
) -> torch.Tensor:
    """A random point at each example's distance ``||x_adv - x||`` in ``norm``, clipped to
    ``domain``: random signs for Linf (a corner of the box), a random normal direction otherwise."""
    dist = lp_norm((x_adv - x).flatten(1).double(), norm)
    if norm == "inf":
        d = (rng.uniform(*x.shape[1:]) < 0.5).double().mul(2).sub(1)
    else:
        d = rng.normal(*x.shape[1:]).double()
    d = d.to(x.device).flatten(1)
    d = d / lp_norm(d, norm).clamp_min(1e-12)[:, None]
    return domain.clip((x.double() + (d * dist[:, None]).view_as(x)).to(x.dtype))


def _check_strength(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    res: AttackResult,
    threat: ThreatModel,
    seed: int,
    ids: torch.Tensor,
    name: str,
) -> None:
    x_rand = same_size_noise(
        x, res.x_adv, threat.norm, _rng(seed_from("noise", seed), ids), model.domain
    )
    yd = y.to(x.device)
    with torch.no_grad():
        z_adv, z_rand = model.logits(res.x_adv), model.logits(x_rand)
    n_adv = int((z_adv.argmax(dim=1) != yd).sum())
    n_rand = int((z_rand.argmax(dim=1) != yd).sum())
    m_adv = float(margin_loss(z_adv.double(), yd).mean())
    m_rand = float(margin_loss(z_rand.double(), yd).mean())
    assert n_adv >= n_rand and m_adv > m_rand, (
        f"{name} is weaker than random noise of the same size: it fools {n_adv} of {len(x)} "
        f"(noise: {n_rand}) with mean margin loss {m_adv:.4g} (noise: {m_rand:.4g})"
    )
