"""Projected Gradient Descent (Madry et al., 2018; Kurakin et al.'s BIM without random start; S34).

One attack for every Lp norm (the norm is part of the threat model, not the class).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from robustlab.attacks.base import (
    Goal,
    Misclassified,
    check_inputs,
    final_success,
    logits_and_grad,
    require_grad,
    split_hits,
    until_fooled,
)
from robustlab.attacks.steps import steepest_step
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel


def compact_lazily(device: torch.device) -> bool:
    """Whether early stop freezes fooled rows and compacts by halves (GPUs) instead of at once."""
    return device.type != "cpu"


@attacks.register("pgd")
class PGD:
    """K steps of steepest ascent on the goal loss, each projected onto the Lp ball and the domain.

    White-box. ``step_size`` is relative to eps (default 2.5 / steps, Madry et al.); ``restarts``
    random starts for the examples not yet fooled; with ``early_stop`` an example leaves the batch as
    soon as the goal is met (the result is identical; only the cost drops).

    Example::

        res = PGD(steps=10)(clf, x, y, ThreatModel("inf", 8 / 255), rng=ExampleRNG.from_seed(0, ids))
        robust_acc = 1 - res.success.float().mean()
    """

    def __init__(
        self,
        steps: int = 10,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        early_stop: bool = True,
    ) -> None:
        self.steps = steps
        self.step_size = step_size
        self.restarts = restarts
        self.random_start = random_start
        self.early_stop = early_stop

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        rng: ExampleRNG,
    ) -> AttackResult:
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(
                f"pgd needs steps >= 1 and restarts >= 1, got {self.steps}, {self.restarts}"
            )
        require_grad(model, "pgd")
        check_inputs(model, x, y, "pgd")
        goal = goal or Misclassified()
        x = x.detach()
        y = y.to(x.device)
        alpha = (self.step_size if self.step_size is not None else 2.5 / self.steps) * threat.eps
        if self.restarts == 1:  # one round: keep the final success check deferred
            return AttackResult(*self._run(model, x, y, threat, goal, rng, alpha))
        return until_fooled(
            x,
            range(self.restarts),
            lambda todo, _: self._run(model, x[todo], y[todo], threat, goal, rng.take(todo), alpha),
        )

    def _run(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        goal: Goal,
        rng: ExampleRNG,
        alpha: float,
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor], torch.Tensor]:
        dom = model.domain
        n = x.shape[0]
        if self.random_start and threat.eps > 0:
            u = rng.uniform(*x.shape[1:], device=x.device).to(x.dtype)
            cur = threat.sample(x, dom, u)
        else:
            cur = x.clone()
        out = cur if self.early_stop else x  # rows are overwritten before they are returned
        out = out.clone()
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        queries = torch.full((n,), self.steps + 1, dtype=torch.long, device=x.device)
        # the still-active examples are kept compacted (xa, ya, cur): no indexing per step
        idx, xa, ya = torch.arange(n, device=x.device), x, y
        box = threat.norm == "inf"  # Linf: ball and domain are one box, clamp once per step
        if box:
            lo = (x - threat.eps).clamp_min(dom.lo)
            hi = (x + threat.eps).clamp_max(dom.hi)
        # CPU: fooled examples leave the batch at once. GPU: every new batch shape costs cuDNN a
        # fresh plan (~0.5 ms per conv call), so fooled rows are frozen and the batch is compacted
        # only when at most half of it is still live (log2(n) shapes at most)
        lazy = compact_lazily(x.device)
        live, n_live = torch.ones(n, dtype=torch.bool, device=x.device), n
        for k in range(self.steps):
            logits, grad = logits_and_grad(model, cur, ya, goal)
            split = None
            if self.early_stop:
                hit = goal.success(logits, ya)
                split = split_hits(hit & live if lazy else hit)
            if split is not None:
                hit, keep = split
                gone = idx[hit]
                done[gone], out[gone], queries[gone] = True, cur[hit], k + 1
                if lazy:  # fooled rows stay in the batch, frozen out of `live`, until half left
                    live[hit] = False
                    n_live -= hit.numel()
                    keep = torch.nonzero(live).flatten() if 2 * n_live <= live.numel() else None
                    live = live if keep is None else live[keep]
            if split is not None and keep is not None:
                idx, xa, ya, cur, grad = idx[keep], xa[keep], ya[keep], cur[keep], grad[keep]
                if box:
                    lo, hi = lo[keep], hi[keep]
                if idx.numel() == 0:
                    break
            if box:  # in place: the graph that held cur's storage is freed
                cur = cur.add_(grad.sign_(), alpha=alpha).clamp_(lo, hi)
            else:
                step = steepest_step(grad, cur, threat.norm, alpha, dom)
                cur = threat.project(cur + step, xa, dom)
        if idx.numel() and lazy:
            out[idx[live]] = cur[live]  # frozen rows keep the point that fooled the model
        elif idx.numel():
            out[idx] = cur
        return out, final_success(model, goal, out, y, done), queries
