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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import optimize, sparse

from robustlab.certify.base import check_certify_inputs, require_positive
from robustlab.certify.ibp import input_box
from robustlab.certify.milp_chain import ReluChain, relu_chain
from robustlab.core.registry import certifiers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Certificate, NonNegative, Positive

ROBUST, COUNTEREXAMPLE, UNDECIDED = 0, 1, 2

__all__ = ["COUNTEREXAMPLE", "ROBUST", "UNDECIDED", "MILPVerifier", "Problem", "ReluChain",
           "exact_bounds", "ibp_tightness", "interval_margins", "relu_chain", "verify"]  # fmt: skip


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
        cls, chain: ReluChain, lo: np.ndarray, hi: np.ndarray, phases: np.ndarray | None = None
    ) -> Problem:
        """Encode ``chain`` for inputs in the box ``[lo, hi]`` (flat, float64).

        ``phases`` (one entry per hidden neuron, layers concatenated: +1 active, -1 inactive, 0
        free) fixes ReLU phases, as for neural activation patterns; stable neurons are fixed too.
        """
        pre = chain.bounds(lo, hi)[:-1]
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

    def minimize(self, spec: np.ndarray, time_limit: float) -> tuple[float, float, Any]:
        """Minimise ``spec @ logits``: ``(proven lower bound, best value found, its input x)``.

        The lower bound is ``+inf`` when no input satisfies the constraints (the property holds
        vacuously) and ``-inf`` when the solver stopped (``time_limit`` seconds) without one; the
        best value is ``+inf`` when no feasible input was found.
        """
        w, b = self.chain.weights[-1], self.chain.biases[-1]
        c = np.zeros(len(self.integrality))
        c[self.last : self.last + w.shape[1]] = spec @ w
        const = float(spec @ b)
        res = optimize.milp(c, constraints=self.cons, integrality=self.integrality,
                            bounds=self.bounds,
                            options={"time_limit": time_limit, "mip_rel_gap": 1e-6})  # fmt: skip
        if res.status == 2:
            return np.inf, np.inf, None
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
) -> tuple[int, float, np.ndarray | None]:
    """Decide "no input in ``[lo, hi]`` gets a logit above ``z_c``": ``(status, margin_lb, x_cex)``.

    ``status`` is ROBUST (every ``z_c - z_j`` has a proven lower bound > ``tol``), COUNTEREXAMPLE
    (an input with ``z_c - z_j < 0`` was found, returned as ``x_cex``) or UNDECIDED (time limit).
    Classes already proven by interval arithmetic are skipped; the most dangerous go first.
    """
    ibp = interval_margins(chain, lo, hi, c)
    ibp[c] = np.inf
    proven = ibp.copy()  # per-class proven lower bounds of z_c - z_j
    problem, status = None, ROBUST
    for j in np.argsort(ibp):
        if ibp[j] > tol:
            break
        problem = problem or Problem.build(chain, lo, hi, phases)
        spec = -np.eye(len(ibp))[j]
        spec[c] += 1.0
        low, best, x = problem.minimize(spec, time_limit)
        proven[j] = max(proven[j], low)
        if best < 0:
            return COUNTEREXAMPLE, float(proven.min()), x
        if low <= tol:
            status = UNDECIDED
    return status, float(proven.min()), None


@certifiers.register("milp")
class MILPVerifier:
    """Exact Linf verification of small ReLU networks by MILP (Tjeng, Xiao & Tedrake, 2019).

    Threat model: Linf ball of radius ``eps`` ∩ the input domain (``norm="inf"``). The prediction
    is the model's argmax; radius ``eps`` when no input of the ball gets another class (proven by
    HiGHS' dual bound), 0 when the solver finds a counterexample, and an abstention
    (``pred = -1``, ``extra["milp_status"] = 2``) when a solve hits ``time_limit`` seconds
    undecided. Complete (up to float64 arithmetic) for chains of affine layers and ReLUs.

    Example::

        cert = MILPVerifier(eps=0.05).certify(clf, x, y, rng=ExampleRNG.from_seed(0, ids))
        exact_robust_acc = ((cert.pred == y) & (cert.radius >= 0.05)).float().mean()
    """

    norm = "inf"

    def __init__(self, eps: NonNegative = 0.1, time_limit: Positive = 30.0) -> None:
        self.eps = eps
        self.time_limit = time_limit

    def certify(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, *, rng: ExampleRNG
    ) -> Certificate:
        """Verify each example of ``x``; ``y`` and ``rng`` are not used (deterministic)."""
        require_positive("milp", eps=self.eps, time_limit=self.time_limit)
        chain = relu_chain(model)
        check_certify_inputs(model, x, y, "milp")
        with torch.no_grad():
            pred = model.logits(x).argmax(dim=1).cpu()
        lo, hi = _boxes(model, x, self.eps)
        status, margin, secs = [], [], []
        for i in range(x.shape[0]):  # one MILP per example and class: the solver dominates
            t = time.perf_counter()
            st, low, _ = verify(chain, lo[i], hi[i], int(pred[i]), self.time_limit)
            status.append(st)
            margin.append(low)
            secs.append(time.perf_counter() - t)
        st_t = torch.tensor(status)
        undecided = st_t == UNDECIDED
        return Certificate(
            pred=torch.where(undecided, -1, pred).to(x.device),
            radius=torch.where(st_t == ROBUST, self.eps, 0.0).to(x.device, x.dtype),
            norm=self.norm,
            abstained=undecided.to(x.device),
            extra={
                "milp_status": st_t.to(x.device),
                "margin_lb": torch.tensor(margin, dtype=torch.float64).to(x.device),
                "milp_seconds": torch.tensor(secs, dtype=torch.float64).to(x.device),
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
