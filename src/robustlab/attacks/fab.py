"""FAB: Fast Adaptive Boundary attack, a minimum-norm attack (Croce & Hein, ICML 2020), untargeted
or FAB^T (AutoAttack's targeted version), for Linf, L2 and L1.

Threat model: the smallest Lp perturbation (inside the input domain) that changes the top-1 class.
Each step linearises the model at the current point, picks the closest decision hyperplane
``f_j - f_y = 0`` (distance ``|f_j - f_y| / ||grad||_q``, q the dual norm), projects both the current
point and the original input onto it (intersected with the domain box; exact batched projection,
:mod:`robustlab.attacks.fab_core`), and takes the biased step
``(1 - a)(x_k + eta d_k) + a (x_0 + eta d_0)``, ``a = min(|d_k| / (|d_k| + |d_0|), alpha_max)``;
once adversarial it steps back towards ``x_0`` by ``beta``. Restarts start at a random point at
half of ``min(best norm, eps)``.

``extra["min_norm"]``: the smallest adversarial distance found per example (inf where none, 0
where the clean input is already wrong). With a budget ``eps`` an example counts as fooled when
that distance is ``<= eps``, and ``x_adv`` is then the minimal point (else the clean input), so the
result always lies in the ball. Use a level covering the domain (Linf 1) to read off minimal norms.

Example::

    res = FAB(steps=100)(clf, x, y, ThreatModel("2", 10.0), rng=ExampleRNG.from_seed(0, ids))
    res.extra["min_norm"].median()            # median minimal L2 perturbation
    FAB(n_targets=9)(...)                     # FAB^T: one hyperplane (target) per run
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs, require_grad
from robustlab.attacks.fab_core import fab_run
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, Positive, PositiveInt, Rate, ThreatModel, lp_norm


@attacks.register("fab")
class FAB:
    """Minimum-norm FAB attack; ``n_targets`` None = untargeted (all decision hyperplanes, one
    backward pass over the batch repeated ``num_classes - 1`` times per step), else FAB^T over the
    ``n_targets`` highest-scoring wrong classes (one hyperplane per run: for many classes).
    ``minimize``: every restart / target runs on every example, keeping the smallest norm; False
    (AutoAttack's use with a budget): later restarts / targets only attack examples whose best
    norm is still above ``eps``."""

    needs_grad = True  # white-box: validation refuses it on a model without gradients

    def __init__(
        self,
        steps: PositiveInt = 100,
        restarts: PositiveInt = 1,
        n_targets: PositiveInt | None = None,
        alpha_max: Positive = 0.1,
        eta: Positive = 1.05,
        beta: Rate = 0.9,
        minimize: bool = True,
    ) -> None:
        self.steps = steps
        self.restarts = restarts
        self.n_targets = n_targets
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta
        self.minimize = minimize

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
        self._check(model, x, y, goal)
        x, y = x.detach(), y.to(x.device)
        n, k = x.shape[0], model.num_classes
        with torch.no_grad():
            z = model.logits(x)
        clean_wrong = z.argmax(1) != y
        best = torch.where(clean_wrong, 0.0, float("inf")).to(x.device)
        adv = x.clone()
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        idx = torch.nonzero(~clean_wrong).flatten()
        if idx.numel() and k > 1:
            xs, ys = x[idx], y[idx]
            others = torch.arange(k, device=x.device).expand(len(idx), k)
            others = others[others != ys[:, None]].view(len(idx), k - 1)
            if self.n_targets is None:
                rounds = [others]
            else:
                order = z[idx].scatter(1, ys[:, None], float("-inf")).argsort(1, descending=True)
                rounds = [order[:, t : t + 1] for t in range(min(self.n_targets, k - 1))]
            eps = threat.eps * (1 + 1e-6)
            for t, cls in enumerate(rounds):
                for r in range(self.restarts):
                    # minimise: every example every round; else only those not yet within eps
                    pos = torch.arange(len(idx), device=x.device)
                    if not self.minimize:
                        pos = torch.nonzero(best[idx] > eps).flatten()
                        if pos.numel() == 0:
                            break
                    ii, xp = idx[pos], xs[pos]
                    start = xp if r == 0 else self._random_start(xp, best[ii], threat, model, rng.take(ii).fork(f"fab{t}-{r}"))  # fmt: skip
                    bx, bn = fab_run(model, xp, ys[pos], cls[pos], start, threat.norm, self.steps,
                                     self.alpha_max, self.eta, self.beta)  # fmt: skip
                    better = bn < best[ii]
                    adv[ii[better]], best[ii[better]] = bx[better], bn[better]
                    queries[ii] += self.steps * (cls.shape[1] + 1)
        success = best <= threat.eps * (1 + 1e-6)
        x_adv = torch.where(success.view(-1, *([1] * (x.dim() - 1))), adv, x)
        with torch.no_grad():  # the returned point must be adversarial in this very batch too
            fooled = model.logits(x_adv).argmax(1) != y
        lost = success & ~fooled
        x_adv[lost] = x[lost]
        success = success & fooled
        extra = {"min_norm": best.cpu(), "distance": lp_norm((x_adv - x).flatten(1), threat.norm)}
        return AttackResult(x_adv, success.cpu(), (queries + 1).cpu(), extra)

    def _check(self, model: Any, x: torch.Tensor, y: torch.Tensor, goal: Goal | None) -> None:
        require_grad(model, "fab")
        check_inputs(model, x, y, "fab")
        if goal is not None and not isinstance(goal, Misclassified):
            raise ConfigError("fab is untargeted (FAB^T picks its own targets): goal must be None")
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"fab needs steps >= 1 and restarts >= 1, got {self.steps}, {self.restarts}")  # fmt: skip
        if self.n_targets is not None and self.n_targets < 1:
            raise ConfigError(f"fab: n_targets must be None or >= 1, got {self.n_targets}")
        if not (0 <= self.alpha_max <= 1 and self.eta >= 1 and 0 < self.beta <= 1):
            raise ConfigError("fab needs 0 <= alpha_max <= 1, eta >= 1 and 0 < beta <= 1")

    @staticmethod
    def _random_start(
        x: torch.Tensor, best: torch.Tensor, threat: ThreatModel, model: Any, rng: ExampleRNG
    ) -> torch.Tensor:
        """A random point at distance ``min(best, eps) / 2`` (the paper's restarts)."""
        r = torch.minimum(best, torch.full_like(best, threat.eps)).clamp_max(1e6)
        t = (2 * rng.uniform(*x.shape[1:]).to(x.device, x.dtype) - 1).flatten(1)
        t = t / lp_norm(t, threat.norm).clamp_min(1e-12)[:, None]
        return (x + (0.5 * r[:, None] * t).view_as(x)).clamp(model.domain.lo, model.domain.hi)
