"""Exact verification of small ReLU networks by mixed-integer linear programming.

Tjeng, Xiao & Tedrake, "Evaluating Robustness of Neural Networks with Mixed Integer Programming"
(ICLR 2019, arXiv:1711.07356). Threat model: the Linf ball of radius ``eps`` ∩ the input domain.
The network is read as a chain of affine maps and ReLUs (:mod:`robustlab.certify.milp_chain`:
``Linear``, ``Conv``, eval ``BatchNorm``, ``Flatten``, average pooling and the adapter's
normalization are folded into dense matrices); each
ReLU ``h = max(0, z)`` with pre-activation bounds ``l <= z <= u`` (interval arithmetic, layer by
layer) is encoded exactly with one binary ``a``::

    h >= z,  h >= 0,  h <= u * a,  h <= z - l * (1 - a)        (stable neurons: a fixed)

and HiGHS (``scipy.optimize.milp``) minimises ``z_y - z_j`` for each other class ``j``. A positive
*dual* bound for every ``j`` proves robustness; a negative primal value is a counterexample.

The bounds ``l, u`` are linear-relaxation (CROWN) bounds (:mod:`robustlab.certify.bounds`), never
looser than interval arithmetic: fewer unstable ReLUs (fewer binaries) and tighter big-M constants.
The certifier decides in stages, cheapest first (:func:`decide`): (1) the same bounds, folded with
each ``z_c - z_j``, prove classes (often all of them) without a solve; (2) for the examples left,
PGD looks for a counterexample (re-checked: inside the box, a negative margin in the float64 chain
and a changed argmax of the model); (3) a MILP per remaining class, the classes ordered by the
attack's margins, each solve cut off at ``z_c - z_j <= tol`` (infeasible = proven), stopping at the
first counterexample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import optimize, sparse

from robustlab.certify.base import check_certify_inputs, require_int, require_positive
from robustlab.certify.bounds import linear_bounds, margin_bounds
from robustlab.certify.ibp import input_box
from robustlab.certify.milp_chain import ReluChain, relu_chain
from robustlab.core.registry import certifiers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Certificate, NonNegative, NonNegativeInt, Positive, PositiveInt

ROBUST, COUNTEREXAMPLE, UNDECIDED = 0, 1, 2
BOUNDS, ATTACK, SOLVER = 0, 1, 2  # the stage that decided an example (:func:`decide`)

__all__ = ["ATTACK", "BOUNDS", "COUNTEREXAMPLE", "ROBUST", "SOLVER", "UNDECIDED", "MILPVerifier",
           "Problem", "ReluChain", "check_counterexample", "decide", "exact_bounds", "follows_phases",
           "ibp_tightness", "interval_margins", "relu_chain", "verify"]  # fmt: skip


@dataclass
class Problem:
    """The MILP of a ReLU chain over an input box; variables ``[x, h_1, ..., h_L-1, a_1, ...]``."""

    chain: ReluChain
    cons: list[optimize.LinearConstraint]
    bounds: optimize.Bounds
    integrality: np.ndarray
    last: int  # index of the first variable feeding the logits (x for a linear model)

    @classmethod
    def build(
        cls,
        chain: ReluChain,
        lo: np.ndarray,
        hi: np.ndarray,
        phases: np.ndarray | None = None,
        pre: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> Problem:
        """Encode ``chain`` for inputs in the box ``[lo, hi]`` (flat, float64).

        ``phases`` (one entry per hidden neuron, layers concatenated: +1 active, -1 inactive, 0
        free) fixes ReLU phases, as for neural activation patterns; stable neurons are fixed too.
        ``pre``: sound bounds ``[(l_k, u_k)]`` of the hidden pre-activations over the box (default:
        :func:`~robustlab.certify.bounds.linear_bounds`); they only set the big-M constants and
        the stable phases, so the MILP's optimum does not depend on them.
        """
        if pre is None:
            pre = [(lk[0], uk[0]) for lk, uk in linear_bounds(chain, lo[None], hi[None])]
        n0, n_h = len(lo), sum(len(b) for b in chain.biases[:-1])
        nvar = n0 + 2 * n_h
        ri, ci, vals, rlo, rhi = [], [], [], [], []
        v_lo, v_hi, a_lo, a_hi = [lo], [hi], [], []
        prev, h0, row = 0, n0, 0
        for k, (lk, u) in enumerate(pre):
            w, b, n = chain.weights[k], chain.biases[k], len(lk)
            h = h0 + np.arange(n)
            a = h + n_h
            rr, cc = np.nonzero(w)
            for j in range(2):  # rows h - W prev >= b  and  h - W prev - l a <= b - l
                ri += [row + j * n + rr, row + j * n + np.arange(n)]
                ci += [prev + cc, h]
                vals += [-w[rr, cc], np.ones(n)]
            ri += [row + n + np.arange(n), row + 2 * n + np.arange(n), row + 2 * n + np.arange(n)]
            ci += [a, h, a]
            vals += [-lk, np.ones(n), -u]  # ... and h - u a <= 0
            rlo += [b, np.full(n, -np.inf), np.full(n, -np.inf)]
            rhi += [np.full(n, np.inf), b - lk, np.zeros(n)]
            v_lo.append(np.zeros(n))
            v_hi.append(np.maximum(u, 0))
            fix = np.where(lk >= 0, 1.0, np.where(u <= 0, 0.0, np.nan))
            if phases is not None:
                ph = phases[h0 - n0 : h0 - n0 + n]
                fix = np.where(ph > 0, 1.0, np.where(ph < 0, 0.0, fix))
            a_lo.append(np.nan_to_num(fix, nan=0.0))
            a_hi.append(np.nan_to_num(fix, nan=1.0))
            prev, h0, row = h0, h0 + n, row + 3 * n
        cons = []
        if row:
            mat = sparse.csr_array(
                (np.concatenate(vals), (np.concatenate(ri), np.concatenate(ci))), shape=(row, nvar)
            )
            cons = [optimize.LinearConstraint(mat, np.concatenate(rlo), np.concatenate(rhi))]
        bounds = optimize.Bounds(np.concatenate(v_lo + a_lo), np.concatenate(v_hi + a_hi))
        integrality = np.concatenate([np.zeros(n0 + n_h), np.ones(n_h)])
        return cls(chain, cons, bounds, integrality, prev)

    def minimize(
        self, spec: np.ndarray, time_limit: float, cutoff: float | None = None
    ) -> tuple[float, float, Any]:
        """Minimise ``spec @ logits``: ``(proven lower bound, best value found, its input x)``.

        The lower bound is ``+inf`` when no input satisfies the constraints (the property holds
        vacuously) and ``-inf`` when the solver stopped (``time_limit`` seconds) without one; the
        best value is ``+inf`` when no feasible input was found. ``cutoff``: only inputs with
        ``spec @ logits <= cutoff`` are searched (one more row, which lets the solver prune every
        branch whose relaxation is above it); the lower bound is then ``cutoff`` when there is
        none.
        """
        w, b = self.chain.weights[-1], self.chain.biases[-1]
        c = np.zeros(len(self.integrality))
        c[self.last : self.last + w.shape[1]] = spec @ w
        const = float(spec @ b)
        cons = list(self.cons)
        if cutoff is not None:
            cons.append(optimize.LinearConstraint(c[None], -np.inf, cutoff - const))
        res = optimize.milp(c, constraints=cons, integrality=self.integrality,
                            bounds=self.bounds,
                            options={"time_limit": time_limit, "mip_rel_gap": 1e-6})  # fmt: skip
        if res.status == 2:
            return (np.inf if cutoff is None else cutoff), np.inf, None
        x = None if res.x is None else res.x[: self.chain.weights[0].shape[1]]
        best = np.inf if res.x is None else float(res.fun) + const
        dual = getattr(res, "mip_dual_bound", None)
        if res.status == 0:
            lower = float(dual) + const if dual is not None and np.isfinite(dual) else best
            return min(lower, best), best, x
        return -np.inf, best, x


def _boxes(model: Any, x: torch.Tensor, eps: float) -> tuple[np.ndarray, np.ndarray]:
    box = input_box(model, x.detach().cpu().double(), eps)
    return box.lo.flatten(1).numpy(), box.hi.flatten(1).numpy()


def interval_margins(chain: ReluChain, lo: np.ndarray, hi: np.ndarray, c: int) -> np.ndarray:
    """Interval lower bounds of ``z_c - z_j`` per class (last layer elided, as in ``ibp``)."""
    pre = chain.bounds(lo, hi)
    w, b = chain.weights[-1], chain.biases[-1]
    if len(pre) > 1:
        lo, hi = np.maximum(pre[-2][0], 0), np.maximum(pre[-2][1], 0)
    spec = w[c][None, :] - w
    cen, rad = (hi + lo) / 2, (hi - lo) / 2
    return spec @ cen - np.abs(spec) @ rad + b[c] - b


def verify(
    chain: ReluChain,
    lo: np.ndarray,
    hi: np.ndarray,
    c: int,
    time_limit: float,
    tol: float = 1e-6,
    phases: np.ndarray | None = None,
    *,
    pre: list[tuple[np.ndarray, np.ndarray]] | None = None,
    margins: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> tuple[int, float, np.ndarray | None]:
    """Decide "no input in ``[lo, hi]`` gets a logit above ``z_c``": ``(status, margin_lb, x_cex)``.

    ``status`` is ROBUST (every ``z_c - z_j`` has a proven lower bound > ``tol``), COUNTEREXAMPLE
    (an input of the box with ``z_c - z_j < 0`` in the float64 chain, re-checked after clipping the
    solver's point into the box, returned as ``x_cex``) or UNDECIDED (time limit).
    Classes already proven by the linear-relaxation bounds (``margins``: lower bounds of
    ``z_c - z_j``, default :func:`~robustlab.certify.bounds.margin_bounds` on the hidden bounds
    ``pre``, default :func:`~robustlab.certify.bounds.linear_bounds`) are skipped; the others are
    solved in ``order`` (default: lowest bound first), each MILP cut off at ``2 tol`` (no input
    at or below it proves the class), stopping at the first counterexample.

    ``phases`` (neural activation patterns, :mod:`robustlab.certify.nap`) restrict the box to the
    inputs that follow them; a counterexample must then also follow them exactly in the float64
    chain (:func:`follows_phases`, no tolerance). The solver's vertex usually sits on phase
    boundaries, so an interior point of its linear region (:func:`_interior`) is tried first; when
    neither point passes, the class is UNDECIDED.
    """
    if pre is None:
        pre = [(lk[0], uk[0]) for lk, uk in linear_bounds(chain, lo[None], hi[None])]
    if margins is None:
        batch = [(lk[None], uk[None]) for lk, uk in pre]
        margins = margin_bounds(chain, lo[None], hi[None], np.array([c]), batch)[0]
    proven = np.array(margins, dtype=np.float64)  # per-class proven lower bounds of z_c - z_j
    proven[c] = np.inf
    order = np.argsort(proven, kind="stable") if order is None else order
    problem, status = None, ROBUST
    for j in order:
        if j == c or proven[j] > tol:
            continue
        problem = problem or Problem.build(chain, lo, hi, phases, pre)
        spec = -np.eye(len(proven))[j]
        spec[c] += 1.0
        low, best, x = problem.minimize(spec, time_limit, cutoff=2 * tol)
        proven[j] = max(proven[j], low)
        if best < 0 and x is not None:
            # HiGHS meets bounds up to its feasibility tolerance (~1e-7): clip into the box and
            # re-check the margin (and the fixed phases) there in the float64 chain
            x = np.clip(x, lo, hi)
            cands = [x] if phases is None else [_interior(chain, lo, hi, c, j, phases, x), x]
            for xc in (xc for xc in cands if xc is not None):
                z, pre = chain.forward(xc)
                if z[c] - z[j] < 0 and (
                    phases is None or follows_phases(np.concatenate(pre)[None], phases)[0]
                ):
                    return COUNTEREXAMPLE, float(proven.min()), xc
            status = UNDECIDED  # a margin within rounding of 0: neither proven nor refuted
        elif low <= tol:
            status = UNDECIDED
    return status, float(proven.min()), None


def follows_phases(pre: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """``[B]`` bool: rows of ``pre`` (hidden pre-activations ``[B, hidden]``, float64, layers
    concatenated) with the fixed ``phases``: ``>= 0`` where ``phases > 0``, ``<= 0`` where
    ``phases < 0``, no tolerance (a pre-activation exactly 0 has both phases).

    The one definition of "follows a pattern": the closed set :meth:`Problem.build` encodes when it
    fixes binaries, what :func:`verify` requires of a counterexample, and what
    :func:`robustlab.certify.nap.matches` tests.
    """
    return ((pre >= 0) | (phases <= 0)).all(axis=-1) & ((pre <= 0) | (phases >= 0)).all(axis=-1)


def _interior(
    chain: ReluChain,
    lo: np.ndarray,
    hi: np.ndarray,
    c: int,
    j: int,
    phases: np.ndarray,
    x0: np.ndarray,
    slack_max: float = 1.0,
) -> np.ndarray | None:
    """A counterexample away from the boundaries, in the linear region of the solver's ``x0``.

    The MILP's optimum is a vertex, where fixed phases typically sit at pre-activation exactly 0
    and float64 rounding puts it on either side. With every ReLU's phase fixed (the pattern's, else
    ``x0``'s) the chain is affine in ``x``; one LP maximises the slack ``t <= slack_max`` of the
    pattern's phases and of ``z_j - z_c`` over the box. Returns the LP's input (clipped to the
    box), or None when the LP fails; the caller re-checks it like the solver's point.
    """
    n = len(lo)
    a, off, rows_a, rows_b, free_a, free_b = np.eye(n), np.zeros(n), [], [], [], []
    for w, b, ph in zip(chain.weights[:-1], chain.biases[:-1],
                        np.split(phases, np.cumsum([len(b) for b in chain.biases[:-2]])),
                        strict=True):  # fmt: skip
        za, zb = w @ a, w @ off + b
        sign = np.where(ph != 0, np.sign(ph), np.where(za @ x0 + zb >= 0, 1.0, -1.0))
        # sign * z >= t (pattern) or >= 0 (free):  -sign * za x + t <= sign * zb
        rows_a.append(-sign[ph != 0, None] * za[ph != 0])
        rows_b.append(sign[ph != 0] * zb[ph != 0])
        free_a.append(-sign[ph == 0, None] * za[ph == 0])
        free_b.append(sign[ph == 0] * zb[ph == 0])
        on = sign > 0
        a, off = np.where(on[:, None], za, 0.0), np.where(on, zb, 0.0)
    za, zb = chain.weights[-1] @ a, chain.weights[-1] @ off + chain.biases[-1]
    rows_a.append(-(za[j] - za[c])[None])  # z_j - z_c >= t
    rows_b.append(np.array([zb[j] - zb[c]]))
    pa, fa = np.concatenate(rows_a), np.concatenate(free_a)
    a_ub = np.block([[pa, np.ones((len(pa), 1))], [fa, np.zeros((len(fa), 1))]])
    b_ub = np.concatenate(rows_b + free_b)
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    res = optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, method="highs",
                           bounds=list(zip(lo, hi, strict=True)) + [(None, slack_max)])  # fmt: skip
    return None if res.status != 0 else np.clip(res.x[:n], lo, hi)


def check_counterexample(
    model: Any,
    chain: ReluChain,
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    c: np.ndarray,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Which rows of ``x`` ``[B, n]`` (float64) are counterexamples for the classes ``c`` ``[B]``.

    A row counts when it lies in its box ``[lo, hi]`` (the Linf ball ∩ domain, float64), some
    ``z_c - z_j`` of the float64 chain is negative there, it is exactly representable in
    ``dtype`` (the model's input dtype) and the model's own forward pass on it predicts another
    class than ``c``.
    """
    inside = np.all((x >= lo) & (x <= hi), axis=1)
    z = _chain_logits(chain, x)
    rows = np.arange(len(c))
    margin_neg = (z[rows, c][:, None] - z < 0).any(axis=1)
    shape = (len(x), *model.domain.shape)
    with torch.no_grad():
        xt = torch.from_numpy(x).view(shape).to(dtype)
        pred = model.logits(xt.to(device)).argmax(dim=1).cpu().numpy()
    exact = (xt.double().flatten(1).numpy() == x).all(axis=1)  # the model saw exactly this point
    return inside & margin_neg & (pred != c) & exact


def _chain_logits(chain: ReluChain, x: np.ndarray) -> np.ndarray:
    for w, b in zip(chain.weights[:-1], chain.biases[:-1], strict=True):
        x = np.maximum(x @ w.T + b, 0)
    return x @ chain.weights[-1].T + chain.biases[-1]


def _inside_float32(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``x`` clipped to ``[lo, hi]`` and rounded to float32 without leaving the box (float64)."""
    x32 = np.clip(x, lo, hi).astype(np.float32)
    x32 = np.where(x32 < lo, np.nextafter(x32, np.float32(np.inf)), x32)
    x32 = np.where(x32 > hi, np.nextafter(x32, np.float32(-np.inf)), x32)
    return x32.astype(np.float64)


def decide(
    model: Any,
    chain: ReluChain,
    x: torch.Tensor,
    pred: np.ndarray,
    eps: float,
    time_limit: float,
    *,
    rng: ExampleRNG | None = None,
    attack_steps: int = 50,
    attack_restarts: int = 2,
    tol: float = 1e-6,
) -> dict[str, np.ndarray]:
    """Exact verdicts for a batch, cheapest stage first: bounds, then PGD, then one MILP per class.

    Returns arrays ``[B]``: ``status`` (ROBUST / COUNTEREXAMPLE / UNDECIDED), ``margin_lb`` (a
    proven lower bound of ``min_j z_c - z_j``; for a MILP-proven class ``2 tol``), ``stage``
    (BOUNDS / ATTACK / SOLVER: what decided it), ``seconds`` (the batched stages' time shared
    evenly among the examples they ran on, plus each example's own solves) and ``x_cex`` ``[B, n]``
    (counterexamples, NaN rows elsewhere; each re-checked by :func:`check_counterexample`).
    ``attack_steps = 0`` skips the attack (the MILP still decides every example).
    """
    lo, hi = _boxes(model, x, eps)
    bsz, n = lo.shape
    pred = np.asarray(pred, dtype=int)
    t0 = time.perf_counter()
    pre = linear_bounds(chain, lo, hi)
    margins = margin_bounds(chain, lo, hi, pred, pre)
    seconds = np.full(bsz, (time.perf_counter() - t0) / max(bsz, 1))
    status = np.full(bsz, ROBUST)
    stage = np.full(bsz, BOUNDS)
    margin_lb = margins.min(axis=1)
    x_cex = np.full((bsz, n), np.nan)
    todo = np.flatnonzero((margins <= tol).any(axis=1))
    order = np.argsort(margins, axis=1, kind="stable")
    if len(todo) and attack_steps > 0:
        from robustlab.attacks.pgd import PGD  # only when the bounds leave examples open
        from robustlab.core.types import ThreatModel

        t0 = time.perf_counter()
        idx = torch.from_numpy(todo)
        rng = rng if rng is not None else ExampleRNG.from_seed(0, torch.arange(bsz))
        adv = PGD(steps=attack_steps, restarts=attack_restarts)(
            model, x[idx], torch.from_numpy(pred[todo]).to(x.device), ThreatModel("inf", eps),
            rng=rng.take(idx),
        )  # fmt: skip
        xa = _inside_float32(
            adv.x_adv.detach().cpu().double().flatten(1).numpy(), lo[todo], hi[todo]
        )
        found = check_counterexample(
            model, chain, xa, lo[todo], hi[todo], pred[todo], x.dtype, x.device
        )
        za = _chain_logits(chain, xa)
        adv_margin = za[np.arange(len(todo)), pred[todo]][:, None] - za
        adv_margin[np.arange(len(todo)), pred[todo]] = np.inf
        # classes the attack came closest to first, then by bound
        order[todo] = np.lexsort((margins[todo], adv_margin), axis=1)
        hit = todo[found]
        status[hit], stage[hit], x_cex[hit] = COUNTEREXAMPLE, ATTACK, xa[found]
        seconds[todo] += (time.perf_counter() - t0) / len(todo)
        todo = todo[~found]
    for i in todo:  # one MILP per example and open class: the solver dominates
        t0 = time.perf_counter()
        pre_i = [(lk[i], uk[i]) for lk, uk in pre]
        st, low, xc = verify(chain, lo[i], hi[i], int(pred[i]), time_limit, tol,
                             pre=pre_i, margins=margins[i], order=order[i])  # fmt: skip
        status[i], stage[i], margin_lb[i] = st, SOLVER, low
        if xc is not None:
            x_cex[i] = xc
        seconds[i] += time.perf_counter() - t0
    return {"status": status, "margin_lb": margin_lb, "stage": stage, "seconds": seconds,
            "x_cex": x_cex}  # fmt: skip


@certifiers.register("milp")
class MILPVerifier:
    """Exact Linf verification of small ReLU networks by MILP (Tjeng, Xiao & Tedrake, 2019).

    Threat model: Linf ball of radius ``eps`` ∩ the input domain (``norm="inf"``). The prediction
    is the model's argmax; radius ``eps`` when no input of the ball gets another class (proven by
    linear-relaxation bounds or HiGHS), 0 when PGD (``attack_steps`` x ``attack_restarts``; 0
    steps: none) or the solver finds a counterexample, and an abstention (``pred = -1``,
    ``extra["milp_status"] = 2``) when a solve hits ``time_limit`` seconds undecided. Complete
    (up to float64 arithmetic) for chains of affine layers and ReLUs: the bounds and the attack
    only decide earlier what the MILP would decide (:func:`decide`).

    Example::

        cert = MILPVerifier(eps=0.05).certify(clf, x, y, rng=ExampleRNG.from_seed(0, ids))
        exact_robust_acc = ((cert.pred == y) & (cert.radius >= 0.05)).float().mean()
    """

    norm = "inf"

    def __init__(
        self,
        eps: NonNegative = 0.1,
        time_limit: Positive = 30.0,
        attack_steps: NonNegativeInt = 50,
        attack_restarts: PositiveInt = 2,
    ) -> None:
        self.eps = eps
        self.time_limit = time_limit
        self.attack_steps = attack_steps
        self.attack_restarts = attack_restarts

    def certify(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, *, rng: ExampleRNG
    ) -> Certificate:
        """Verify each example of ``x``; ``y`` is not used, ``rng`` only by the attack stage."""
        require_positive("milp", eps=self.eps, time_limit=self.time_limit)
        require_int("milp", 0, attack_steps=self.attack_steps)
        require_int("milp", 1, attack_restarts=self.attack_restarts)
        chain = relu_chain(model)
        check_certify_inputs(model, x, y, "milp")
        with torch.no_grad():
            pred = model.logits(x).argmax(dim=1).cpu()
        out = decide(model, chain, x, pred.numpy(), self.eps, self.time_limit, rng=rng,
                     attack_steps=self.attack_steps, attack_restarts=self.attack_restarts)  # fmt: skip
        st_t = torch.from_numpy(out["status"])
        undecided = st_t == UNDECIDED
        return Certificate(
            pred=torch.where(undecided, -1, pred).to(x.device),
            radius=torch.where(st_t == ROBUST, self.eps, 0.0).to(x.device, x.dtype),
            norm=self.norm,
            abstained=undecided.to(x.device),
            extra={
                "milp_status": st_t.to(x.device),
                "margin_lb": torch.from_numpy(out["margin_lb"]).to(x.device),
                "milp_seconds": torch.from_numpy(out["seconds"]).to(x.device),
            },
        )


def exact_bounds(model: Any, x: torch.Tensor, eps: float, time_limit: float = 30.0) -> Any:
    """Exact lower/upper bounds ``[B, K]`` of every logit over the Linf ball ∩ domain (2K MILPs).

    A solve that hits ``time_limit`` gives a looser but still valid bound (its dual bound).
    """
    chain = relu_chain(model)
    lo, hi = _boxes(model, x, eps)
    k = len(chain.biases[-1])
    out = np.zeros((2, x.shape[0], k))
    for i in range(x.shape[0]):
        problem = Problem.build(chain, lo[i], hi[i])
        for j, sign in ((j, s) for j in range(k) for s in (1, -1)):
            low, _, _ = problem.minimize(sign * np.eye(k)[j], time_limit)
            out[int(sign < 0), i, j] = sign * low
    return torch.from_numpy(out[0]), torch.from_numpy(out[1])


def ibp_tightness(model: Any, x: torch.Tensor, eps: float, time_limit: float = 30.0) -> Any:
    """IBP tightness (Mao et al., 2023; S15): optimal box size / IBP box size, per example.

    ``tau = mean_k (ub*_k - lb*_k) / (ub_k - lb_k)`` with the optimal box ``[lb*, ub*]`` of the
    logits over the ball from :func:`exact_bounds` and ``[lb, ub]`` from IBP; 1 means IBP is exact.
    """
    from robustlab.certify.ibp import interval_bounds

    lb_star, ub_star = exact_bounds(model, x, eps, time_limit)
    lb, ub = interval_bounds(model, x, eps)
    width = (ub - lb).double().cpu().clamp_min(1e-12)
    return ((ub_star - lb_star) / width).clamp(max=1.0).mean(dim=1)
