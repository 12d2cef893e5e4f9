"""APGD's core loop and losses (Croce & Hein, ICML 2020); the attacks are in :mod:`.apgd`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.base import Goal, Targeted
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
    """One APGD run; returns (x_adv, success, queries); batched with per-example state."""
    dom, n, dev = model.domain, x.shape[0], x.device
    u = rng.uniform(*x.shape[1:]).to(dev, x.dtype)
    out, success = x.clone(), torch.zeros(n, dtype=torch.bool, device=dev)
    queries = torch.zeros(n, dtype=torch.long, device=dev)
    ckpt = set(checkpoints(n_iter))
    act = torch.arange(n, device=dev)

    def evaluate(xa: torch.Tensor, a: torch.Tensor):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            z = model.logits(xa)
            loss = _losses(z, lab[a], None if tgt is None else tgt[a], kind, goal)
            (g,) = torch.autograd.grad(loss.sum(), xa)
        queries[a] += 1
        return z.detach(), loss.detach(), g

    cur = threat.sample(x, dom, u) if threat.eps > 0 else x.clone()
    z, loss, grad = evaluate(cur, act)
    s = dict(cur=cur, prev=cur.clone(), grad=grad, loss=loss, best=cur.clone(),
             best_loss=loss.clone(), best_grad=grad.clone(), x=x,
             eta=torch.full((n,), 2 * threat.eps, device=dev, dtype=x.dtype),
             incr=torch.zeros(n, device=dev), last_best=loss.clone(),
             reduced=torch.ones(n, dtype=torch.bool, device=dev))  # fmt: skip
    last_w = 0
    for i in range(n_iter + 1):
        hit = goal.success(z, lab[act])
        if hit.any():
            out[act[hit]], success[act[hit]] = s["cur"][hit], True
            if early_stop or i == n_iter:
                keep = ~hit
                act, s = act[keep], {k: v[keep] for k, v in s.items()}
                if act.numel() == 0:
                    break
        if i == n_iter:
            break
        if i in ckpt:  # halve the step where progress stalled; restart from the best point
            osc = s["incr"] < rho * (i - last_w)
            flag = osc | (~s["reduced"] & (s["last_best"] >= s["best_loss"]))
            s["reduced"], s["last_best"], s["incr"] = flag, s["best_loss"].clone(), s["incr"] * 0
            s["eta"] = torch.where(flag, s["eta"] / 2, s["eta"])
            f = flag.view(-1, *([1] * (x.dim() - 1)))
            s["cur"] = torch.where(f, s["best"], s["cur"])
            s["grad"] = torch.where(f, s["best_grad"], s["grad"])
            last_w = i
        cur, xa, eta = s["cur"], s["x"], s["eta"].view(-1, *([1] * (x.dim() - 1)))
        alpha = 0.75 if i > 0 else 1.0
        z1 = threat.project(
            cur + eta * steepest_step(s["grad"], cur, threat.norm, 1.0, dom), xa, dom
        )
        new = threat.project(cur + alpha * (z1 - cur) + (1 - alpha) * (cur - s["prev"]), xa, dom)
        z, loss, grad = evaluate(new, act)
        s["incr"] = s["incr"] + (loss > s["loss"]).to(s["incr"].dtype)
        better = loss > s["best_loss"]
        b = better.view(-1, *([1] * (x.dim() - 1)))
        s["best"] = torch.where(b, new, s["best"])
        s["best_grad"] = torch.where(b, grad, s["best_grad"])
        s["best_loss"] = torch.where(better, loss, s["best_loss"])
        s["prev"], s["cur"], s["grad"], s["loss"] = cur, new, grad, loss
    if act.numel():  # not fooled: return the highest-loss point
        miss = ~success[act]
        out[act[miss]] = s["best"][miss]
    return out, success, queries
