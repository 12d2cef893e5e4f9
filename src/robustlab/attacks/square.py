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
from robustlab.core.types import AttackResult, PositiveInt, Rate, ThreatModel

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


@lru_cache(maxsize=64)
def _windows(s: int, h: int, w: int, device: str) -> torch.Tensor:
    """Every Linf proposal window of side ``s``: ``[n, n, 1, H, W]`` bool, indexed by the window's
    top-left corner (both coordinates drawn below ``n = max(h - s + 1, 1)``, as in ``_linf``)."""
    n = max(h - s + 1, 1)
    pos = torch.arange(n, device=device)
    _, mh = _window(pos, s, h)  # [n, H]
    _, mw = _window(pos, s, w)  # [n, W]
    return (mh[:, None, :, None] & mw[None, :, None, :])[:, :, None]


@lru_cache(maxsize=64)
def _window_index(s: int, c: int, h: int, w: int, device: str) -> torch.Tensor:
    """Flat indices (into ``[C, H, W]``) of every Linf window of side ``s``: ``[n * n, C s s]``,
    row ``i n + j`` for the top-left corner ``(i, j)``, ``n = max(h - s + 1, 1)``; needs
    ``h <= w`` (every window inside the image)."""
    n = max(h - s + 1, 1)
    r = torch.arange(n)[:, None] + torch.arange(s)[None, :]  # [n, s] rows (or columns)
    cell = r[:, None, :, None] * w + r[None, :, None, :]  # [n, n, s, s]
    ch = torch.arange(c).view(1, 1, c, 1) * (h * w)
    return (cell.reshape(n * n, 1, s * s) + ch.view(1, c, 1)).reshape(n * n, -1).to(device)


class _LinfDraws:
    """The Linf loop's random proposals, drawn for blocks of iterations at once (one hash over the
    block instead of two small draws per iteration) and identical to drawing them one iteration
    at a time: iteration ``it`` takes draw ``2 it`` of the streams for the window's corner
    (``integers``, i.e. float64 uniforms) and draw ``2 it + 1`` for the signs. A block may draw
    past the last iteration (examples all fooled); :meth:`finish` sets the counter back."""

    BLOCK = 64

    def __init__(
        self, rng: ExampleRNG, shape: torch.Size, p_init: float, n_iter: int, device: torch.device
    ) -> None:
        self.rng, self.shape, self.p_init, self.n_iter = rng, shape, p_init, n_iter
        self.device = device
        self.start, self.used, self.counter = 0, 0, rng.position  # iterations; draws
        self.side: list[int] = []
        self.corner = self.plus = torch.empty(0)

    def next(self, it: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Iteration ``it``'s window side, corners ``[B]`` (flat index into :func:`_windows`'s
        first two dimensions) and signs ``[B, C, 1, 1]`` (True: +)."""
        k = it - self.start
        if k >= len(self.side):
            self._fill(it)
            k = 0
        self.used = it + 1
        return self.side[k], self.corner[k], self.plus[k]

    def finish(self) -> None:
        """Leave the streams' counter where two draws per iteration run would (the caller's RNG
        may draw on)."""
        self.rng.seek(self.counter + 2 * self.used)

    def keep(self, index: torch.Tensor) -> None:
        """Examples ``index`` of the current batch stay (the others left)."""
        self.rng = self.rng.take(index)
        self.corner, self.plus = self.corner[:, index], self.plus[:, index]

    def _fill(self, it: int) -> None:
        c, h, w = self.shape
        m = min(self.BLOCK, self.n_iter - it)
        self.side = [_linf_side(p_selection(self.p_init, i, self.n_iter), h, w)
                     for i in range(it, it + m)]  # fmt: skip
        high = torch.tensor([max(h - s + 1, 1) for s in self.side], dtype=torch.float64)
        bases = self.rng.draw_bases(2 * m).view(m, 2, -1)
        dev = bases.device
        u = ExampleRNG.uniform_at(bases[:, 0, :, None], torch.arange(2, device=dev), torch.float64)
        # r.integers(high, 2): (u * high).long() clamped below high; then the flat corner index
        high = high.to(dev).view(m, 1, 1)
        pos = torch.minimum((u * high).long(), high.long() - 1)  # [m, B, 2]
        self.corner = (pos[..., 0] * high.view(m, 1).long() + pos[..., 1]).to(self.device)
        signs = ExampleRNG.uniform_at(bases[:, 1, :, None], torch.arange(c, device=dev))
        self.plus = (signs < 0.5).view(m, -1, c, 1, 1).to(self.device)
        self.start = it


class _Rejected:
    """The Linf proposals each example has already been refused from its current point.

    A Linf proposal is fixed by its window side, corner and per-channel signs (every value is
    ``x +- eps`` clipped); late in the schedule the windows are small and the same proposal comes
    again (a 1-pixel window on an 8x8 grey image has 64). While an example's point and margin are
    unchanged, a proposal refused before is refused again: the model, asked the same input, gives
    the same margin, which was not below the current one. So it is not asked again (the query is
    still counted, as the attack made it); an accepted step forgets the example's refusals. Exact
    for a deterministic model whose rows do not depend on the rest of the batch (what early stop
    relies on too); off for models declaring ``randomized`` and where the table would be large
    (side, corner and signs over :data:`MAX_KEYS` keys), and off the CPU (a new batch shape costs
    a GPU a fresh plan; not measured there)."""

    MAX_KEYS = 1 << 14  # keys per example (bools): 16 KB per example at most

    def __init__(self, n: int, shape: torch.Size) -> None:
        self.c, self.h = shape[0], shape[1]
        self.side = -1
        self.seen = torch.zeros(n, 0, dtype=torch.bool)
        self.key = torch.zeros(n, dtype=torch.long)
        self.pow = 1 << torch.arange(self.c)

    @classmethod
    def for_model(cls, model: Any, x: torch.Tensor) -> _Rejected | None:
        """The table for this attack, or None where it does not apply."""
        if getattr(model, "randomized", False) or x.device.type != "cpu" or x.shape[1] > 8:
            return None
        return cls(x.shape[0], x.shape[1:])

    def ask(self, side: int, corner: torch.Tensor, sign: torch.Tensor) -> torch.Tensor | None:
        """Rows to ask the model about (None: all of them)."""
        if side != self.side:  # a new window size: new proposals
            keys = max(self.h - side + 1, 1) ** 2 << self.c  # corners x signs
            self.side = side
            self.seen = torch.zeros(len(corner), keys if keys <= self.MAX_KEYS else 0,
                                    dtype=torch.bool)  # fmt: skip
        if self.seen.shape[1] == 0:
            return None
        self.key = (corner << self.c) + (sign.long() * self.pow).sum(1)
        known = self.seen.gather(1, self.key[:, None]).squeeze(1)
        return torch.nonzero(~known).flatten() if bool(known.any()) else None

    def answered(self, better: torch.Tensor) -> None:
        """Record the refusals of this iteration; an accepted step clears its row."""
        if self.seen.shape[1] == 0:
            return
        self.seen.scatter_(1, self.key[:, None], ~better[:, None])
        moved = torch.nonzero(better).flatten()
        if moved.numel():
            self.seen[moved] = False

    def keep(self, index: torch.Tensor) -> None:
        """Examples ``index`` of the current batch stay (the others left)."""
        self.seen = self.seen[index]


def _linf_side(p: float, h: int, w: int) -> int:
    """Side of the Linf proposal window for the fraction ``p`` of an ``h`` x ``w`` image."""
    return min(max(int(round(math.sqrt(p * h * w))), 1), h - 1 if h > 1 else 1, w)


@attacks.register("square")
class Square:
    """Square Attack with ``n_queries`` iterations and initial fraction ``p_init`` (0.8 as in
    AutoAttack)."""

    black_box = True  # queries only: compared with white-box attacks in the masking checks

    def __init__(self, n_queries: PositiveInt = 5000, p_init: Rate = 0.8) -> None:
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
                draws = _LinfDraws(ra, x.shape[1:], self.p_init, self.n_queries, x.device)
            memo = _Rejected.for_model(model, x) if not l2 else None
            for it in range(self.n_queries):
                if act.numel() == 0:
                    break
                if l2:
                    p = p_selection(self.p_init, it, self.n_queries)
                    new = threat.project(self._l2(xa, cur, p, eps, ra, dom), xa, dom)
                    ask = None
                else:
                    side, corner, plus = draws.next(it)
                    new, sign = self._linf_step(cur, up, down, side, corner, plus)
                    ask = memo.ask(side, corner, sign) if memo is not None else None
                # the model is asked about every row, or (memo) only the rows whose proposal was
                # not refused before from this point
                rows = slice(None) if ask is None else ask
                better = torch.zeros_like(marg, dtype=torch.bool)
                hit = torch.zeros_like(better)
                if ask is None or ask.numel():
                    z, ys = model.logits(new[rows]), ya[rows]
                    m = margin(z, ys, tg)
                    b = m < marg[rows]
                    better[rows], marg[rows] = b, torch.where(b, m, marg[rows])
                    hit[rows] = goal.success(z, ys) & b
                cur = torch.where(better.view(-1, 1, 1, 1), new, cur)
                if memo is not None:
                    memo.answered(better)
                if bool(hit.any()):
                    gone = act[hit]
                    best[gone], success[gone], queries[gone] = cur[hit], True, it + 2
                    keep = torch.nonzero(~hit).flatten()
                    act, xa, cur, ya, marg = act[keep], xa[keep], cur[keep], ya[keep], marg[keep]
                    ra = ra.take(keep)
                    if not l2:
                        up, down = up[keep], down[keep]
                        draws.keep(keep)
                        if memo is not None:
                            memo.keep(keep)
            if not l2:
                draws.finish()
            if act.numel():  # never fooled: the lowest-margin point, queried at every iteration
                best[act], queries[act] = cur, 1 + self.n_queries
        return AttackResult(best, success.cpu(), queries.cpu())

    @staticmethod
    def _linf_step(cur, up, down, side, corner, plus):  # type: ignore[no-untyped-def]
        """Set the window of side ``side`` at ``corner`` to ``up`` or ``down`` (``x +- eps``
        clipped) per channel as ``plus`` says; flip the sign where that would leave the window as
        it is. Works on the window's values only (gathered, then scattered into a copy of ``cur``)
        where every window lies inside the image, else on masks of the whole image. Returns the
        proposal and the signs it set (``[B, C]``, True: up): side, corner and signs determine the
        proposal given ``cur``."""
        b, c, h, w = cur.shape
        if h > w:  # a window may stick out to the right: masks
            n = max(h - side + 1, 1)
            win = _windows(side, h, w, str(cur.device)).view(n * n, 1, h, w)[corner]
            prop = torch.where(plus, up, down)
            same = (prop - cur).abs_().mul_(win).amax((1, 2, 3)) < 1e-7  # no change: flip
            sign = plus ^ same.view(-1, 1, 1, 1)
            return torch.where(win, torch.where(sign, up, down), cur), sign.view(b, c)
        idx = _window_index(side, c, h, w, str(cur.device))[corner]  # [B, C * side**2]
        flat = cur.reshape(b, -1)
        now = flat.gather(1, idx)
        hi, lo = up.reshape(b, -1).gather(1, idx), down.reshape(b, -1).gather(1, idx)
        pl = plus.view(b, c, 1).expand(b, c, side * side).reshape(b, -1)
        same = (torch.where(pl, hi, lo) - now).abs_().amax(1) < 1e-7  # no change: flip the sign
        vals = torch.where(pl ^ same[:, None], hi, lo)
        sign = plus.view(b, c) ^ same[:, None]
        return flat.clone().scatter_(1, idx, vals).view(b, c, h, w), sign

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
