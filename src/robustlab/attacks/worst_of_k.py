"""Worst-of-k over a continuous-severity perturbation (Engstrom et al., 2019, "Exploring the
landscape of spatial robustness"; S23 natural transformations).

Threat model (not an Lp ball): the set ``{perturbation(x, s) : s in [low, high]}`` of a registered
perturbation with a continuous severity; ``high`` defaults to ``threat.eps`` so a runner level is
the largest severity allowed, and ``threat.norm`` is ignored. ``k`` candidate severities are tried
per example -- an evenly spaced grid (``grid=True``) or ``k`` uniform draws from the example's
random stream -- and the example's worst one (first success, else lowest margin ``z_y - max_j z_j``)
is kept. Black-box: only forward passes (works on probability-only adapters).

Example::

    res = WorstOfK("brightness", k=10)(clf, x, y, ThreatModel("inf", 5.0), rng=rng)
    worst_severity = res.extra["severity"]
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs
from robustlab.attacks.square import margin
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, Levels, PositiveInt, ThreatModel


@attacks.register("worst_of_k")
class WorstOfK:
    """Per-example worst of ``k`` severities of ``perturbation`` in ``[low, high]``."""

    threat = "severity"  # not an Lp ball: checked in tests/test_vision_attacks.py

    def __init__(
        self,
        perturbation: str = "brightness",
        k: PositiveInt = 10,
        low: float = 0.0,
        high: float | None = None,
        grid: bool = True,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.perturbation = perturbation
        self.k = k
        self.low = low
        self.high = high
        self.grid = grid
        self.params = params

    @staticmethod
    def level_domain(perturbation: str = "brightness", params: dict[str, Any] | None = None,
                     **_: Any) -> Levels | None:  # fmt: skip
        """A level is the largest severity tried: the perturbation's own level domain."""
        return perturbations.levels(perturbation, params)

    def severities(self, n: int, threat: ThreatModel, rng: ExampleRNG) -> torch.Tensor:
        """Candidate severities ``[n, k]`` (the same grid for every example, or random draws)."""
        high = threat.eps if self.high is None else self.high
        if self.k < 1 or high < self.low:
            raise ConfigError(f"worst_of_k needs k >= 1 and low <= high, got k={self.k}, "
                              f"[{self.low}, {high}]")  # fmt: skip
        if self.grid:
            s = torch.linspace(self.low, high, self.k + (self.low == 0) * 1, dtype=torch.float64)
            s = s[1:] if self.low == 0 else s  # severity 0 is the clean input
            return s.expand(n, -1)
        return self.low + (high - self.low) * rng.uniform(self.k, dtype=torch.float64)

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
        check_inputs(model, x, y, "worst_of_k")
        pert = perturbations.create(self.perturbation, self.params)
        goal = goal or Misclassified()
        x, y = x.detach(), y.to(x.device)
        n = x.shape[0]
        sev = self.severities(n, threat, rng.fork("sev"))
        with torch.no_grad():
            best, best_sev = x.clone(), torch.zeros(n, dtype=torch.float64)
            z = model.logits(x)
            best_m = margin(z, y, False)
            success = goal.success(z, y).cpu()
            queries = torch.ones(n, dtype=torch.long)
            for j in range(sev.shape[1]):
                act = torch.nonzero(~success).flatten()
                if act.numel() == 0:
                    break
                # one severity per example: group the examples that share it (a grid: one call)
                for s in sev[act, j].unique().tolist():
                    idx = act[sev[act, j] == s]
                    xp = pert(x[idx], s, rng.take(idx).fork(f"pert{j}"))
                    zp = model.logits(xp)
                    queries[idx] += 1
                    m = margin(zp, y[idx], False)
                    hit = goal.success(zp, y[idx]).cpu()
                    take = (m < best_m[idx]).cpu() | hit
                    best[idx[take]] = xp[take.to(xp.device)]
                    best_m[idx[take]] = m[take.to(m.device)]
                    best_sev[idx[take]] = s
                    success[idx[hit]] = True
        return AttackResult(best, success, queries, {"severity": best_sev})
