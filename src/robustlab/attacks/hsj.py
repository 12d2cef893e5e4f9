"""HopSkipJump: decision-based attack, batched (Chen, Jordan & Wainwright, IEEE S&P 2020).

Threat model: L2 or Linf ball (the paper's two variants; L1 runs the L2 geometry and is projected at
the end). Only the top-1 decision is used, so any adapter works, including probability-only ones.
From an adversarial start (uniform noise, then a binary search to the boundary) each iteration
estimates the boundary's normal by Monte-Carlo (``sqrt(t) * init_evals`` probes), takes a
geometric step search along it and binary-searches back to the boundary. Unlike peer
implementations (one example at a time), every phase runs on the whole batch with per-example
masks; an example stops as soon as its adversarial point lies within ``eps``. ``queries`` counts
model evaluations per example.

Example::

    res = HopSkipJump(steps=20)(clf, x, y, ThreatModel("2", 1.0), rng=ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, Positive, PositiveInt, ThreatModel, lp_norm


@attacks.register("hsj")
class HopSkipJump:
    """HSJA with ``steps`` iterations, ``init_evals``/``max_evals`` gradient probes and
    ``init_trials`` random starts; model calls are chunked to ``batch_size`` inputs."""

    black_box = True  # queries only: compared with white-box attacks in the masking checks

    def __init__(
        self,
        steps: PositiveInt = 40,
        init_evals: PositiveInt = 100,
        max_evals: PositiveInt = 1000,
        init_trials: PositiveInt = 50,
        gamma: Positive = 1.0,
        batch_size: int = 4096,
    ) -> None:
        self.steps = steps
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.init_trials = init_trials
        self.gamma = gamma
        self.batch_size = batch_size

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
        if self.steps < 0 or self.init_evals < 1 or self.init_trials < 1 or self.batch_size < 1:
            raise ConfigError("hsj needs steps >= 0, init_evals >= 1, init_trials >= 1")
        check_inputs(model, x, y, "hsj")
        run = copy.copy(self)  # per-call state lives on a copy: the attack object stays unchanged
        run._goal, run._model = goal or Misclassified(), model
        run._q = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return run._attack(x.detach(), y.to(x.device), threat, rng)

    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, rng: ExampleRNG
    ) -> AttackResult:
        n, dom = x.shape[0], self._model.domain
        norm = "inf" if threat.norm == "inf" else "2"
        with torch.no_grad():
            adv = self._start(x, y, rng)
            found = self._adv(adv, y, torch.arange(n, device=x.device))
            d = x[0].numel()
            theta = self.gamma / (d**1.5 if norm == "2" else d**2)
            dist = lp_norm((adv - x).flatten(1), norm)
            act = torch.nonzero(found & (dist > threat.eps)).flatten()
            for t in range(1, self.steps + 1):
                if act.numel() == 0:
                    break
                xa, ya, cur = x[act], y[act], adv[act]
                delta = (math.sqrt(d) if norm == "2" else d) * theta * dist[act]
                ne = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
                g = self._grad(cur, ya, act, delta, ne, norm, rng.take(act).fork(f"g{t}"))
                size = lp_norm((cur - xa).flatten(1), norm) / math.sqrt(t)
                todo = torch.ones(act.numel(), dtype=torch.bool, device=x.device)
                for _ in range(30):  # geometric step-size search, per example
                    cand = dom.clip(cur + _bc(size, cur) * g)
                    idx = todo.nonzero().flatten()
                    ok = self._adv(cand[idx], ya[idx], act[idx])
                    todo[idx[ok]] = False
                    size = torch.where(todo, size / 2, size)
                    if not todo.any():
                        break
                cand = torch.where(_bc(todo, cur), cur, dom.clip(cur + _bc(size, cur) * g))
                adv[act] = self._boundary(xa, cand, ya, act, norm, theta)
                dist[act] = lp_norm((adv[act] - xa).flatten(1), norm)
                act = act[dist[act] > threat.eps]
            x_adv = threat.project(torch.where(_bc(found, x), adv, x), x, dom)
            success = self._goal.success(self._logits(x_adv), y)
        return AttackResult(x_adv, success.cpu(), (self._q + 1).cpu())

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        chunks = [self._model.logits(c) for c in x.split(self.batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0)

    def _adv(self, xs: torch.Tensor, ys: torch.Tensor, who: torch.Tensor) -> torch.Tensor:
        """The decision oracle on ``xs`` for examples ``who`` (counts one query each)."""
        if xs.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=xs.device)
        self._q.index_add_(0, who, torch.ones_like(who))
        return self._goal.success(self._logits(xs), ys)

    def _start(self, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG) -> torch.Tensor:
        """Uniform noise until adversarial (per example), then a binary search towards ``x``."""
        dom, n = self._model.domain, x.shape[0]
        adv, todo = x.clone(), torch.arange(n, device=x.device)
        for k in range(self.init_trials):
            u = rng.take(todo).fork(f"init{k}").uniform(*x.shape[1:]).to(x)
            noise = dom.lo + (dom.hi - dom.lo) * u
            ok = self._adv(noise, y[todo], todo)
            adv[todo[ok]] = noise[ok]
            todo = todo[~ok]
            if todo.numel() == 0:
                break
        done = torch.ones(n, dtype=torch.bool, device=x.device)
        done[todo] = False
        idx = done.nonzero().flatten()
        adv[idx] = self._boundary(x[idx], adv[idx], y[idx], idx, "2", 1e-3 / x[0].numel())
        return adv

    def _boundary(self, x, adv, y, who, norm, theta):  # type: ignore[no-untyped-def]
        """Per-example binary search on the blend ``x -> adv`` (L2) or the Linf box (Linf)."""
        lo = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        thr = (
            theta if norm == "2" else theta / lp_norm((adv - x).flatten(1), "inf").clamp_min(1e-12)
        )
        thr = torch.as_tensor(thr, device=x.device, dtype=x.dtype).expand_as(lo)
        for _ in range(64):
            open_ = (hi - lo) > thr
            if not open_.any():
                break
            idx = open_.nonzero().flatten()
            mid = (hi[idx] + lo[idx]) / 2
            ok = self._adv(_blend(x[idx], adv[idx], mid, norm), y[idx], who[idx])
            hi[idx] = torch.where(ok, mid, hi[idx])
            lo[idx] = torch.where(ok, lo[idx], mid)
        return _blend(x, adv, hi, norm)

    def _grad(self, cur, y, who, delta, ne, norm, rng):  # type: ignore[no-untyped-def]
        """Monte-Carlo estimate of the boundary normal at ``cur`` (unit L2, or its sign)."""
        b, shape = cur.shape[0], cur.shape[1:]
        u = rng.normal(ne, *shape).to(cur) if norm == "2" else 2 * rng.uniform(ne, *shape) - 1
        u = u.to(cur)
        u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(b, ne, *([1] * len(shape)))
        probe = self._model.domain.clip(cur[:, None] + delta.view(b, 1, *([1] * len(shape))) * u)
        u = (probe - cur[:, None]) / delta.view(b, 1, *([1] * len(shape))).clamp_min(1e-12)
        self._q.index_add_(0, who, torch.full_like(who, ne))
        phi = self._goal.success(self._logits(probe.flatten(0, 1)), y.repeat_interleave(ne))
        f = phi.view(b, ne).to(cur) * 2 - 1
        mean = f.mean(dim=1, keepdim=True)
        f = torch.where(mean.abs() == 1, f, f - mean)
        g = (f.view(b, ne, *([1] * len(shape))) * u).mean(dim=1)
        if norm == "inf":
            return g.sign()
        return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(b, *([1] * len(shape)))


def _bc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _blend(x: torch.Tensor, adv: torch.Tensor, a: torch.Tensor, norm: str) -> torch.Tensor:
    a = _bc(a, x)
    if norm == "2":
        return (1 - a) * x + a * adv
    r = a * (adv - x).flatten(1).abs().amax(dim=1).view_as(a)
    return torch.minimum(torch.maximum(adv, x - r), x + r)
