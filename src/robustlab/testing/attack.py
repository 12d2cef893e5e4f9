"""Contract check for attacks."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.types import (
    AttackResult,
    ThreatModel,
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
) -> AttackResult:
    """Check an (untargeted) attack's contract on ``x, y``; return its result.

    Invariants: ``x_adv`` within ``threat.eps`` of ``x`` in the threat norm (up to ``tol`` relative
    to ``max(1, eps)``) and inside ``model.domain``; ``x_adv`` keeps shape, dtype and device;
    ``success`` is bool ``[B]`` and agrees with ``argmax model.logits(x_adv) != y``; ``queries`` is
    int64 ``[B]`` and ``>= 0``; inputs are not mutated; the same seed gives the same result; a shuffled
    sub-batch (with its ids) gets the same results as in the full batch.
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
    return res
