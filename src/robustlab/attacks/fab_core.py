"""FAB building blocks: the minimal-norm projection onto a hyperplane intersected with the box, and
one FAB run (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020, Algorithm 1), batched over examples.

``project(p, w, c, lo, hi, norm)`` solves ``min ||d||_p  s.t.  <w, d> = c,  lo <= p + d <= hi``
for every row at once, exactly: the optimum moves each coordinate in the direction of ``sign(c w)``
by ``min(t, room)`` (Linf), ``min(lambda |w|, room)`` (L2) or greedily by decreasing ``|w|`` (L1),
and the scalar ``t`` / ``lambda`` / cut-off is found by one sort of the breakpoints. Infeasible rows
(the box does not reach the hyperplane) get the full move towards it.
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.types import lp_norm

DUAL = {"inf": "1", "2": "2", "1": "inf"}


def project(
    p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo: float, hi: float, norm: str
) -> torch.Tensor:
    """Minimal-``norm`` ``d`` with ``<w, d> = c`` and ``p + d`` in ``[lo, hi]`` (rows of ``[n, d]``)."""
    ws = w * torch.where(c < 0, -1.0, 1.0).to(w.dtype)[:, None]  # now <ws, d> = |c| >= 0
    cc = c.abs()[:, None]
    a, dirn = ws.abs(), ws.sign()
    room = torch.where(ws > 0, hi - p, p - lo).clamp_min(0)
    n, d = p.shape
    if norm == "1":
        a_s, order = a.sort(dim=1, descending=True)
        r_s = room.gather(1, order)
        cum = (a_s * r_s).cumsum(1)
        k = (cum < cc).sum(1, keepdim=True)  # coordinates before k move fully, k partly
        kc = k.clamp(max=d - 1)
        prev = torch.where(k > 0, cum.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(cc))
        part = ((cc - prev) / a_s.gather(1, kc).clamp_min(1e-30)).clamp_max(r_s.gather(1, kc))
        ar = torch.arange(d, device=p.device)[None]
        mv = torch.where(ar < k, r_s, torch.where(ar == k, part, torch.zeros_like(r_s)))
        return dirn * torch.zeros_like(mv).scatter(1, order, mv)
    if norm == "inf":
        brk, weight, unit = room, a, a  # h(t) = sum a min(t, room)
    else:
        brk = torch.where(a > 0, room / a.clamp_min(1e-30), torch.full_like(a, 1e30))
        weight, unit = a * a, a  # h(lambda) = sum a min(lambda a, room)
    b_s, order = brk.sort(dim=1)
    sat = (a * room).gather(1, order).cumsum(1)  # saturated part up to each breakpoint
    wt = weight.gather(1, order)
    tail = wt.flip(1).cumsum(1).flip(1)  # unsaturated weight from each breakpoint on
    h = sat + b_s * (tail - wt)
    k = (h < cc).sum(1, keepdim=True)
    kc = k.clamp(max=d - 1)
    prev = torch.where(k > 0, sat.gather(1, (k - 1).clamp_min(0)), torch.zeros_like(cc))
    t = (cc - prev) / tail.gather(1, kc).clamp_min(1e-30)
    mv = torch.minimum(t * unit, room) if norm == "2" else torch.minimum(t.expand_as(room), room)
    mv = torch.where(k >= d, room, mv)
    return dirn * mv


def diff_logits_grads(
    model: Any, x: torch.Tensor, y: torch.Tensor, cls: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``f_j(x) - f_y(x)`` and its input gradient for the ``m`` classes ``cls[:, j]``: one forward,
    ``m`` backward passes through the kept graph (faster on CPU than one backward over the batch
    repeated ``m`` times, or than vmap over grad outputs). Returns ``[b, m]`` and ``[b, m, d]``."""
    b, m = cls.shape
    xg = x.detach().requires_grad_(True)
    grads = []
    with torch.enable_grad():
        z = model.logits(xg)
        diff = z.gather(1, cls) - z.gather(1, y[:, None])
        for j in range(m):
            (g,) = torch.autograd.grad(diff[:, j].sum(), xg, retain_graph=j < m - 1)
            grads.append(g.flatten(1))
    return diff.detach(), torch.stack(grads, 1)


def fab_run(
    model: Any,
    x0: torch.Tensor,
    y: torch.Tensor,
    cls: torch.Tensor,
    start: torch.Tensor,
    norm: str,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``start``: the smallest adversarial point found and its distance to ``x0``
    (inf where none). ``cls`` ``[b, m]``: the classes whose decision hyperplanes are considered."""
    lo, hi = model.domain.lo, model.domain.hi
    b = x0.shape[0]
    flat0 = x0.flatten(1)
    cur = start.flatten(1).clone()
    best_x, best_n = x0.flatten(1).clone(), torch.full((b,), float("inf"), device=x0.device)
    ar = torch.arange(b, device=x0.device)
    for _ in range(steps):
        df, dg = diff_logits_grads(model, cur.view_as(x0), y, cls)
        dist = df.abs() / (lp_norm(dg.flatten(0, 1), DUAL[norm]).view_as(df) + 1e-12)
        j = dist.argmin(dim=1)
        w, f = dg[ar, j], df[ar, j]
        d1 = project(cur, w, -f, lo, hi, norm)
        d0 = project(flat0, w, -f - (w * (flat0 - cur)).sum(1), lo, hi, norm)
        a1 = lp_norm(d1, norm).clamp_min(1e-8)
        a0 = lp_norm(d0, norm).clamp_min(1e-8)
        alpha = (a1 / (a1 + a0)).clamp(0, alpha_max)[:, None]
        cur = ((1 - alpha) * (cur + eta * d1) + alpha * (flat0 + eta * d0)).clamp(lo, hi)
        with torch.no_grad():
            adv = model.logits(cur.view_as(x0)).argmax(1) != y
        nrm = lp_norm(cur - flat0, norm)
        better = adv & (nrm < best_n)
        best_x[better], best_n[better] = cur[better], nrm[better]
        cur = torch.where(adv[:, None], flat0 + beta * (cur - flat0), cur)
    return best_x.view_as(x0), best_n
