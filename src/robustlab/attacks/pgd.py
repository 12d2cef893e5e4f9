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
    compact_now,
    final_success,
    logits_and_grad,
    require_grad,
    until_fooled,
)
from robustlab.attacks.steps import steepest_step
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, Positive, PositiveInt, ThreatModel


def default_step(steps: int) -> float:
    """PGD's default step relative to eps: ``max(2.5 / steps, 1 / 4)`` (chosen by measured
    strength across seven small models, 2026-12-07; see :class:`PGD`)."""
    return max(2.5 / steps, 0.25)


@attacks.register("pgd")
class PGD:
    """K steps of steepest ascent on the goal loss, each projected onto the Lp ball and the domain.

    White-box. ``step_size`` is relative to eps; the default ``max(2.5 / steps, 1 / 4)`` is
    Madry et al.'s 2.5 / steps (the iterate can cross the ball) but never below eps / 4
    (torchattacks' PGD step). Measured 2026-12-07 (benchmarks/attack_defaults_strength.py
    ``--part pgd``: 7 small digits/Fashion-MNIST models none of the defaults was tuned on, 2 Linf
    eps each, 200 test images, 2 seeds; docs/vision-attacks.md): at 50 steps x 5 restarts the
    old 2.5 / steps (eps / 20) left 12 images robust that torchattacks' PGD (eps / 4, same budget)
    broke, this default 2, and it sits 0.16 points above the best known robust accuracy (old:
    0.34); at 10 steps both rules are eps / 4 (0.96 points; eps / 10 there: 9.6). Below 10 steps
    it keeps Madry's longer step (k steps of eps / 4 move at most k eps / 4; not measured).
    ``restarts`` random starts for the examples not yet fooled; with ``early_stop`` an example leaves
    the batch as soon as the goal is met (the result is identical; only the cost drops).

    Example::

        res = PGD(steps=10)(clf, x, y, ThreatModel("inf", 8 / 255), rng=ExampleRNG.from_seed(0, ids))
        robust_acc = 1 - res.success.float().mean()
    """

    needs_grad = True  # white-box: validation refuses it on a model without gradients

    def __init__(
        self,
        steps: PositiveInt = 10,
        step_size: Positive | None = None,
        restarts: PositiveInt = 1,
        random_start: bool = True,
        early_stop: bool = True,
    ) -> None:
        self.steps = steps
        self.step_size = step_size
        self.restarts = restarts
        self.random_start = random_start
        self.early_stop = early_stop

    def cost(self, n: int) -> dict[str, int]:
        """Model passes on ``n`` examples (``robustlab plan --estimate``): ``steps`` forward/backward
        passes per restart, plus one success check per restart when there are several (a restart
        runs only on the examples not fooled yet, and ``early_stop`` drops fooled examples: then
        this is an upper bound). With one restart and no early stop it is exact; the final check
        is then the task's evaluation of ``x_adv``, counted by the runner."""
        k = self.steps * self.restarts * n
        return {"forward": k + (self.restarts * n if self.restarts > 1 else 0), "backward": k}

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
        alpha = (
            self.step_size if self.step_size is not None else default_step(self.steps)
        ) * threat.eps
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
        n, dev = x.shape[0], x.device
        if self.random_start and threat.eps > 0:
            u = rng.uniform(*x.shape[1:], device=dev).to(x.dtype)
            cur = threat.sample(x, dom, u)
        else:
            cur = x.clone()
        # the rows still in the batch (idx: their positions in x), kept compacted: xa, ya, cur, and
        # per row `live` (not yet fooled) and `qa` (queries until fooled); rows dropped from the
        # batch are written to `outs` first
        idx, xa, ya = torch.arange(n, device=dev), x, y
        live = torch.ones(n, dtype=torch.bool, device=dev)
        qa = torch.full((n,), self.steps + 1, dtype=torch.long, device=dev)
        outs: list[torch.Tensor] | None = None  # [x_adv, done, queries] once a row was dropped
        n_rows, n_frozen = n, 0
        unit = (-1, *([1] * (x.dim() - 1)))
        box = threat.norm == "inf"  # Linf: ball and domain are one box, clamp once per step
        if box:
            lo = (x - threat.eps).clamp_min(dom.lo)
            hi = (x + threat.eps).clamp_max(dom.hi)
        for k in range(self.steps):
            logits, grad = logits_and_grad(model, cur, ya, goal)
            if self.early_stop:
                hit = goal.success(logits, ya)
                if n_frozen:
                    hit.logical_and_(live)
                n_hit = int(hit.sum())  # the one device sync per step
                if n_hit:
                    qa.masked_fill_(hit, k + 1)
                    live.logical_xor_(hit)  # hit implies live: live & ~hit
                    n_frozen += n_hit
                    if n_frozen == n_rows:
                        break
                    if compact_now(n_frozen, n_rows, self.steps - k - 1, dev):
                        if outs is None:
                            outs = [x.clone(), torch.zeros_like(live), qa.clone()]
                        gone = ~live  # frozen rows hold the point that fooled the model
                        at = idx[gone]
                        outs[0][at], outs[1][at], outs[2][at] = cur[gone], True, qa[gone]
                        keep = torch.nonzero(live).flatten()
                        idx, xa, ya, cur, grad, qa = (t[keep] for t in (idx, xa, ya, cur, grad, qa))
                        if box:
                            lo, hi = lo[keep], hi[keep]
                        live = live[keep]
                        n_rows, n_frozen = n_rows - n_frozen, 0
            if box:  # in place: the graph that held cur's storage is freed; frozen rows stay put
                step = grad.sign_()
                if n_frozen:
                    step.mul_(live.view(unit))
                cur = cur.add_(step, alpha=alpha).clamp_(lo, hi)
            else:
                step = steepest_step(grad, cur, threat.norm, alpha, dom)
                new = threat.project(cur + step, xa, dom)
                cur = torch.where(live.view(unit), new, cur) if n_frozen else new
        if outs is None:  # the batch was never compacted: its rows are the result
            out, done, queries = cur, ~live, qa
        else:
            out, done, queries = outs
            out[idx], done[idx], queries[idx] = cur, ~live, qa
        return out, final_success(model, goal, out, y, done), queries
