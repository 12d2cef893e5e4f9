"""Square Attack: score-based black-box random search (Andriushchenko et al., ECCV 2020).

Threat model: Linf or L2 ball (the paper's two variants) intersected with the input domain; only
scores are used (logits or log-probabilities), so it runs on probability-only adapters such as
scikit-learn models. Each iteration proposes, per example, a random square window of side
``sqrt(p n / c)`` (``p`` halves on the paper's schedule, rescaled to ``n_queries``) -- Linf: set the
window to ``x +- eps`` with a random sign per channel; L2: move mass into the window as a
two-bump "pseudo-Gaussian" pattern, keeping the total norm at eps -- and keeps it if the margin
loss decreases. L1 (not in the paper) runs the L2 proposals projected onto the L1 ball (a heuristic).
Examples leave the batch when fooled; ``queries`` counts model evaluations per example.

Example::

    res = Square(n_queries=1000)(models.create("digits-logreg"), x, y, ThreatModel("inf", 0.1),
                                 rng=ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, Targeted, check_inputs
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
             (6000, 128), (8000, 256))  # fmt: skip


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """The paper's schedule for the fraction of pixels changed at iteration ``it``."""
    it = int(it / n_queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def margin(z: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` (untargeted) or ``max_{j != t} z_j - z_t`` (targeted, y = t)."""
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - zy if targeted else zy - other


@lru_cache(maxsize=64)
def _bumps(s: int) -> torch.Tensor:
    """The L2 proposal pattern of side ``s``: +bump on the top half, -bump below, unit L2 norm."""

    def bump(h: int, w: int) -> torch.Tensor:
        r = torch.arange(h)[:, None] - (h // 2 - 0.5 * (h % 2 == 0))
        c = torch.arange(w)[None, :] - (w // 2 - 0.5 * (w % 2 == 0))
        ring = torch.maximum(r.abs(), c.abs()).ceil().long()  # concentric squares
        k = torch.arange(max(h, w) + 1)
        w_k = (1.0 / (k + 1.0) ** 2).flip(0).cumsum(0).flip(0)  # sum_{j >= ring} 1/(j+1)^2
        b = w_k[ring.clamp(max=max(h, w))]
        return b / b.norm()

    d = torch.cat([bump(s // 2, s), -bump(s - s // 2, s)]) if s > 1 else torch.ones(1, 1)
    return d / d.norm()


def _window(pos: torch.Tensor, s: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets into a window of side ``s`` at ``pos`` [B] along an axis of ``n`` ([B, n]), valid."""
    rel = torch.arange(n, device=pos.device)[None, :] - pos[:, None]
    return rel.clamp(0, s - 1), (rel >= 0) & (rel < s)


@attacks.register("square")
class Square:
    """Square Attack with ``n_queries`` iterations and initial fraction ``p_init`` (0.8 as in
    AutoAttack)."""

    def __init__(self, n_queries: int = 5000, p_init: float = 0.8) -> None:
        self.n_queries = n_queries
        self.p_init = p_init

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
        if self.n_queries < 0 or not 0 < self.p_init <= 1:
            raise ConfigError("square needs n_queries >= 0 and 0 < p_init <= 1")
        check_inputs(model, x, y, "square")
        if x.dim() != 4:
            raise ConfigError(f"square needs image batches [B, C, H, W], got {tuple(x.shape)}")
        goal = goal or Misclassified()
        tg = isinstance(goal, Targeted)
        dom, (n, c, h, w) = model.domain, x.shape
        x, y = x.detach(), y.to(x.device)
        eps, l2 = threat.eps, threat.norm != "inf"
        with torch.no_grad():
            if l2:  # the paper's init: a grid of bumps with random signs, scaled to norm eps
                s0 = max(h // 5, 1)
                delta = _bumps(s0).to(x).repeat(h // s0 + 1, w // s0 + 1)[:h, :w]
                signs = (rng.uniform(c, h // s0 + 1, w // s0 + 1) < 0.5).to(x) * 2 - 1
                delta = delta * signs.repeat_interleave(s0, 2).repeat_interleave(s0, 3)[..., :h, :w]
                best = threat.project(x + eps * _unit(delta), x, dom)
            else:  # vertical stripes of +-eps
                best = dom.clip(x + eps * ((rng.uniform(c, 1, w) < 0.5).to(x) * 2 - 1))
            z = model.logits(best)
            success = goal.success(z, y)
            queries = torch.ones(n, dtype=torch.long, device=x.device)
            act = torch.nonzero(~success).flatten()
            # the examples still in the batch, compacted (written back when they leave)
            xa, cur, ya, ra = x[act], best[act], y[act], rng.take(act)
            marg = margin(z[act], ya, tg)
            if not l2:  # every Linf value is x +- eps clipped to the domain: already in the ball
                up, down = dom.clip(xa + eps), dom.clip(xa - eps)
            for it in range(self.n_queries):
                if act.numel() == 0:
                    break
                p = p_selection(self.p_init, it, self.n_queries)
                if l2:
                    new = threat.project(self._l2(xa, cur, p, eps, ra, dom), xa, dom)
                else:
                    new = self._linf(cur, up, down, p, ra)
                z = model.logits(new)
                m = margin(z, ya, tg)
                better = m < marg
                cur = torch.where(better.view(-1, 1, 1, 1), new, cur)
                marg = torch.where(better, m, marg)
                hit = goal.success(z, ya) & better
                if bool(hit.any()):
                    gone = act[hit]
                    best[gone], success[gone], queries[gone] = cur[hit], True, it + 2
                    keep = torch.nonzero(~hit).flatten()
                    act, xa, cur, ya, marg = act[keep], xa[keep], cur[keep], ya[keep], marg[keep]
                    ra = ra.take(keep)
                    if not l2:
                        up, down = up[keep], down[keep]
            if act.numel():  # never fooled: the lowest-margin point, queried at every iteration
                best[act], queries[act] = cur, 1 + self.n_queries
        return AttackResult(best, success.cpu(), queries.cpu())

    @staticmethod
    def _linf(cur, up, down, p, r):  # type: ignore[no-untyped-def]
        """Set a random window to ``up`` or ``down`` per channel (``x +- eps`` clipped); flip the
        sign where that would leave the window as it is."""
        b, c, h, w = cur.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h - 1 if h > 1 else 1, w)
        pos = r.integers(max(h - s + 1, 1), 2)
        _, mh = _window(pos[:, 0], s, h)
        _, mw = _window(pos[:, 1], s, w)
        win = (mh[:, :, None] & mw[:, None, :])[:, None]  # [B, 1, H, W]
        plus = r.uniform(c, 1, 1) < 0.5
        prop = torch.where(plus, up, down)
        same = ((prop - cur).abs() * win).flatten(1).amax(1) < 1e-7  # no change: flip the sign
        plus = plus ^ same.view(-1, 1, 1, 1)
        return torch.where(win, torch.where(plus, up, down), cur)

    @staticmethod
    def _l2(x, cur, p, eps, r, dom):  # type: ignore[no-untyped-def]
        b, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + (s % 2 == 0), h, w)
        delta = cur - x
        pos = r.integers(max(h - s + 1, 1), 4)
        masks, offs = [], []
        for k in (0, 2):
            oh, mh = _window(pos[:, k], s, h)
            ow, mw = _window(pos[:, k + 1], s, w)
            masks.append((mh[:, :, None] & mw[:, None, :])[:, None].to(x))
            offs.append((oh, ow))
        m1, m2 = masks
        pat = _bumps(s).to(x)
        pat = torch.where((r.uniform(1) < 0.5).view(-1, 1, 1), pat.T[None], pat[None])  # [B,s,s]
        oh, ow = offs[0]
        placed = pat[torch.arange(b)[:, None, None], oh[:, :, None], ow[:, None, :]][:, None] * m1
        sign = (r.uniform(c, 1, 1) < 0.5).to(x) * 2 - 1
        n_win1 = (delta.pow(2) * m1).sum((2, 3), keepdim=True).sqrt()
        n_img = _norm(delta)
        n_wins = _norm(delta * torch.maximum(m1, m2))
        new = placed * sign + delta * m1 / (1e-12 + n_win1)
        target = ((eps**2 - n_img**2).clamp_min(0) / c + n_wins**2).sqrt()
        new = new / (1e-12 + (new.pow(2)).sum((2, 3), keepdim=True).sqrt()) * target
        delta = delta * (1 - m2)
        delta = delta * (1 - m1) + new * m1
        return dom.clip(x + delta)


def _norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / _norm(d).clamp_min(1e-12)
