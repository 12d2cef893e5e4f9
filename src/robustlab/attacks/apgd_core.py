"""APGD's core loop and losses (Croce & Hein, ICML 2020); the attacks are in :mod:`.apgd`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.base import Goal, Targeted, compact_now, split_hits
from robustlab.attacks.steps import steepest_step
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel


def dlr_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of Logits Ratio (per example, to maximise); targeted towards ``t`` if given."""
    zs = z.sort(dim=1, descending=True).values
    zy = z.gather(1, y[:, None]).squeeze(1)
    if t is None:
        other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return -(zy - other) / (zs[:, 0] - zs[:, 2] + 1e-12)
    zt = z.gather(1, t[:, None]).squeeze(1)
    return -(zy - zt) / (zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + 1e-12)


def checkpoints(n_iter: int) -> list[int]:
    """Iterations at which APGD checks its step size (the paper's ``w_j = ceil(p_j N)``)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = {math.ceil(round(q * n_iter, 9)) for q in p[1:]}  # round: 0.41 + 0.16 is not 0.57
    return sorted(v for v in w if v < n_iter)


def _losses(z: torch.Tensor, lab: torch.Tensor, tgt: torch.Tensor | None, kind: str, goal: Goal):
    if tgt is not None:  # APGD-T: untargeted goal, loss towards target class tgt
        return (
            dlr_loss(z, lab, tgt) if kind == "dlr" else -F.cross_entropy(z, tgt, reduction="none")
        )
    if isinstance(goal, Targeted):  # y holds the targets: pull towards them
        if kind == "ce":
            return goal.loss(z, lab)
        other = z.scatter(1, lab[:, None], float("-inf")).argmax(dim=1)
        return dlr_loss(z, other, lab)
    return dlr_loss(z, lab) if kind == "dlr" else goal.loss(z, lab)


def apgd_run(
    model: Any,
    x: torch.Tensor,
    lab: torch.Tensor,
    tgt: torch.Tensor | None,
    threat: ThreatModel,
    goal: Goal,
    kind: str,
    n_iter: int,
    rng: ExampleRNG,
    early_stop: bool = True,
    rho: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run; returns (x_adv, success, queries); batched with per-example state.

    The loop body is a handful of fused tensor ops per iteration (it runs ``n_iter`` times, and at
    batch 1 each op's dispatch costs as much as its arithmetic): the state of the examples still
    in the batch is kept compacted in local tensors, Linf projection is one clamp into the box
    ``[max(x - eps, lo), min(x + eps, hi)]``, and query counts are written when examples leave.
    """
    dom, n, dev = model.domain, x.shape[0], x.device
    u = rng.uniform(*x.shape[1:], device=dev).to(x.dtype)
    out, success = x.clone(), torch.zeros(n, dtype=torch.bool, device=dev)
    queries = torch.full((n,), n_iter + 1, dtype=torch.long, device=dev)
    ckpt = set(checkpoints(n_iter))
    act = torch.arange(n, device=dev)
    unit = (-1, *([1] * (x.dim() - 1)))  # per-example scalars broadcast over the input
    box = threat.norm == "inf"
    ys, ts = lab, tgt

    def evaluate(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            z = model.logits(xa)
            loss = _losses(z, ys, ts, kind, goal)
            (g,) = torch.autograd.grad(loss.sum(), xa)
        return z.detach(), loss.detach(), g

    cur = threat.sample(x, dom, u) if threat.eps > 0 else x.clone()
    z, loss, grad = evaluate(cur)
    xs = x
    lo = (x - threat.eps).clamp_min(dom.lo) if box else x
    hi = (x + threat.eps).clamp_max(dom.hi) if box else x
    prev, best, best_loss, best_grad = cur, cur, loss, grad
    eta = torch.full((n,), 2 * threat.eps, device=dev, dtype=x.dtype)
    incr = torch.zeros(n, device=dev)
    last_best = loss
    reduced = torch.ones(n, dtype=torch.bool, device=dev)
    last_w = 0

    def project(v: torch.Tensor) -> torch.Tensor:
        return torch.clamp(v, lo, hi) if box else threat.project(v, xs, dom)

    # early stop: a fooled row is written out at once and frozen (out of `live`); it leaves the
    # batch when compact_now says that pays (at once on CPUs, by halves on GPUs: cuDNN plans anew
    # for every batch shape)
    live = torch.ones(n, dtype=torch.bool, device=dev)
    n_frozen = 0
    for i in range(n_iter + 1):
        hit = goal.success(z, ys)
        if not early_stop:  # everyone stays: keep the latest fooling point, without a sync
            success |= hit
            out = torch.where(hit.view(unit), cur, out)
            if i < n_iter:
                hit = None
        elif n_frozen:
            hit.logical_and_(live)
        split = split_hits(hit) if hit is not None else None
        if split is not None:
            hit, keep = split
            gone = act[hit]
            out[gone], success[gone] = cur[hit], True
            if early_stop or i == n_iter:
                queries[gone] = i + 1
            if not early_stop:
                break  # the last iteration
            live[hit] = False
            n_frozen += hit.numel()
            if n_frozen == act.numel():
                break
            if compact_now(n_frozen, act.numel(), n_iter - i, dev):
                keep = torch.nonzero(live).flatten()
                live, n_frozen = live[keep], 0
                act, ys, xs, lo, hi = act[keep], ys[keep], xs[keep], lo[keep], hi[keep]
                ts = None if ts is None else ts[keep]
                cur, prev, grad, loss = cur[keep], prev[keep], grad[keep], loss[keep]
                best, best_loss, best_grad = best[keep], best_loss[keep], best_grad[keep]
                eta, incr, last_best, reduced = (
                    eta[keep],
                    incr[keep],
                    last_best[keep],
                    reduced[keep],
                )
        if i == n_iter:
            break
        if i in ckpt:  # halve the step where progress stalled; restart from the best point
            flag = (incr < rho * (i - last_w)) | (~reduced & (last_best >= best_loss))
            reduced, last_best, incr = flag, best_loss, torch.zeros_like(incr)
            eta = torch.where(flag, eta / 2, eta)
            f = flag.view(unit)
            cur, grad = torch.where(f, best, cur), torch.where(f, best_grad, grad)
            last_w = i
        if box:
            z1 = torch.clamp(torch.addcmul(cur, eta.view(unit), grad.sign()), lo, hi)
        else:
            z1 = project(cur + eta.view(unit) * steepest_step(grad, cur, threat.norm, 1.0, dom))
        # no momentum on the first step; then cur + 0.75 (z1 - cur) + 0.25 (cur - prev)
        new = z1 if i == 0 else project(z1.mul(0.75).add_(cur, alpha=0.5).sub_(prev, alpha=0.25))
        z, new_loss, new_grad = evaluate(new)
        incr = incr + (new_loss > loss)
        better = new_loss > best_loss
        b = better.view(unit)
        best, best_grad = torch.where(b, new, best), torch.where(b, new_grad, best_grad)
        best_loss = torch.maximum(new_loss, best_loss)
        prev, cur, grad, loss = cur, new, new_grad, new_loss
    if act.numel():  # not fooled: return the highest-loss point
        miss = ~success[act]
        out[act[miss]] = best[miss]
    return out, success, queries
