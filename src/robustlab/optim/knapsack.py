"""A two-stage robust knapsack under budgeted uncertainty, solved exactly by CCG.

Problem (a packing problem with fractional recourse, in the spirit of the two-stage knapsack of
Arslan & Detienne, 2022, used by Neur2RO): items ``i`` have profit ``p_i``, nominal weight ``w_i``,
weight deviation ``d_i`` and a drop penalty ``f_i``. The first stage picks ``x in {0,1}^n`` (the
nominal load must fit, ``sum w x <= C``, and at least ``min_items`` are picked); then the weights
``w_i + d_i xi_i`` are revealed, ``xi`` in the discrete budgeted set
``Xi = {xi in {0,1}^n : sum xi <= Gamma}`` (the vertices of the budget polytope), and the second
stage drops fractions ``0 <= y <= x`` of the picked items at cost ``f . y`` until the load fits::

    min_x  -p . x + max_{xi in Xi} Q(x, xi),
    Q(x, xi) = min { f . y : sum_i (w_i + d_i xi_i)(x_i - y_i) <= C, 0 <= y <= x }.

Q is a fractional knapsack: exact in closed form (:func:`recourse`, batched) and as an LP
(:func:`recourse_lp`, HiGHS). The adversarial problem ``max_xi Q(x, xi)`` is a MILP by LP duality,
``Q = max_{lam >= 0} lam (sum_i W_i x_i - C) - sum_i x_i max(0, lam W_i - f_i)``, with the products
``lam xi_i`` linearised exactly (``xi`` binary, ``lam <= max_i f_i / w_i``) (:func:`worst_case`).
:func:`ccg` is column-and-constraint generation (Zeng & Zhao, Oper. Res. Lett. 2013): the master
MILP holds one copy of the second-stage variables per scenario found so far.

Example::

    inst = generate(8, gamma=2, seed=0)
    sol = ccg(inst)            # Solution(x, objective, iterations, seconds)
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, sparse

from robustlab.core.errors import ConfigError, RobustlabError


class InfeasibleError(RobustlabError, ValueError):
    """The robust problem has no feasible first-stage decision."""


@dataclass(frozen=True)
class Instance:
    """One two-stage robust knapsack (float64 arrays of length ``n``)."""

    profit: np.ndarray
    weight: np.ndarray
    dev: np.ndarray
    penalty: np.ndarray
    capacity: float
    gamma: int
    min_items: int = 0

    @property
    def n(self) -> int:
        return len(self.profit)

    def check(self) -> None:
        """Raise :class:`ConfigError` for malformed data, :class:`InfeasibleError` when no first
        stage fits (fewer than ``min_items`` items fit nominally)."""
        arrs = {"profit": self.profit, "weight": self.weight, "dev": self.dev,
                "penalty": self.penalty}  # fmt: skip
        for k, a in arrs.items():
            if a.shape != (self.n,) or not np.isfinite(a).all():
                raise ConfigError(f"knapsack instance: {k} must be {self.n} finite numbers")
        if (self.weight <= 0).any() or (self.dev < 0).any() or (self.penalty < 0).any():
            raise ConfigError("knapsack instance: weights must be > 0, deviations/penalties >= 0")
        if not np.isfinite(self.capacity) or self.capacity < 0:
            raise ConfigError(f"knapsack instance: capacity must be >= 0, got {self.capacity}")
        if not 0 <= self.gamma <= self.n or not self.min_items >= 0:
            raise ConfigError("knapsack instance: need 0 <= gamma <= n, min_items >= 0")
        if self.min_items > self.n or np.sort(self.weight)[: self.min_items].sum() > self.capacity:
            raise InfeasibleError(
                f"knapsack instance infeasible: no {self.min_items} items fit the capacity "
                f"{self.capacity:g} (lightest {self.min_items} weigh "
                f"{np.sort(self.weight)[: self.min_items].sum():g})"
            )


@dataclass
class Solution:
    """A first-stage decision, its exact robust objective, and how it was found."""

    x: np.ndarray
    objective: float
    iterations: int
    seconds: float


def generate(n: int, gamma: int, seed: int, min_items: int = 0) -> Instance:
    """A random instance: weights U(1, 10), deviations 20-80 % of them, profits near the weights,
    penalties 10-50 % above the profits, capacity 40 % of the total nominal weight."""
    r = np.random.default_rng(seed)
    w = r.uniform(1, 10, n)
    p = w * r.uniform(0.8, 1.3, n)
    inst = Instance(p, w, w * r.uniform(0.2, 0.8, n), p * r.uniform(1.1, 1.5, n),
                    float(0.4 * w.sum()), int(gamma), int(min_items))  # fmt: skip
    inst.check()
    return inst


def vertices(n: int, gamma: int) -> np.ndarray:
    """All ``xi in {0,1}^n`` with ``sum xi <= gamma`` (``[V, n]``)."""
    rows = [np.zeros(n)]
    for k in range(1, gamma + 1):
        for c in itertools.combinations(range(n), k):
            v = np.zeros(n)
            v[list(c)] = 1
            rows.append(v)
    return np.array(rows)


def recourse(inst: Instance, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """Exact ``Q(x, xi)`` for batches (``x``, ``xi``: ``[B, n]``, broadcastable), float64: drop the
    items with the lowest ``f_i / W_i`` first until the overload is gone (the fractional knapsack
    greedy, optimal for the LP)."""
    shape = torch.broadcast_shapes(x.shape, xi.shape)
    w = (torch.as_tensor(inst.weight) + torch.as_tensor(inst.dev) * xi.double()).expand(shape)
    x = x.double().expand(shape)
    f = torch.as_tensor(inst.penalty).expand_as(w)
    over = (w * x).sum(-1) - inst.capacity  # weight to shed
    ratio = torch.where(x > 0, f / w, torch.full_like(w, float("inf")))
    order = ratio.argsort(-1)
    ws, fs, xs = (t.gather(-1, order) for t in (w * x, f, x))
    before = ws.cumsum(-1) - ws  # weight already shed by cheaper items
    frac = ((over[..., None] - before) / ws.clamp_min(1e-300)).clamp(0, 1) * (xs > 0)
    return (frac * fs).sum(-1) * (over > 0)


def recourse_lp(inst: Instance, x: np.ndarray, xi: np.ndarray) -> float:
    """``Q(x, xi)`` as an LP solved by HiGHS (the reference for :func:`recourse`)."""
    w = inst.weight + inst.dev * xi
    res = optimize.linprog(inst.penalty, A_ub=-(w)[None], b_ub=[inst.capacity - w @ x],
                           bounds=list(zip(np.zeros(inst.n), x, strict=True)), method="highs")  # fmt: skip
    if res.status != 0:
        raise InfeasibleError(f"second stage infeasible for x={x}, xi={xi}: {res.message}")
    return float(res.fun)


def worst_case(inst: Instance, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact ``max_{xi in Xi} Q(x, xi)`` and a maximiser, by the dual MILP (module docstring).

    Variables ``[xi (n, binary), lam, mu (n), z (n)]`` with ``z_i = lam xi_i``."""
    n, x = inst.n, np.asarray(x, float)
    w, d, f = inst.weight, inst.dev, inst.penalty
    big = float(np.max(f / w)) if n else 0.0
    eye, zero = sparse.eye(n), sparse.csr_array((n, n))
    col = lambda v: sparse.csr_array(np.asarray(v, float).reshape(-1, 1))  # noqa: E731
    rows = [  # each block: [xi, lam, mu, z]
        (sparse.hstack([zero, col(w), -eye, sparse.diags(d)]), -np.inf, f),  # lam w + d z - mu <= f
        (sparse.hstack([-big * eye, col(np.zeros(n)), zero, eye]), -np.inf, 0),  # z <= big xi
        (sparse.hstack([zero, col(-np.ones(n)), zero, eye]), -np.inf, 0),  # z <= lam
        (sparse.hstack([-big * eye, col(-np.ones(n)), zero, eye]), -big, np.inf),  # z >= lam - big(1-xi)
        (sparse.hstack([col(np.ones(n)).T, col([0]), sparse.csr_array((1, 2 * n))]), -np.inf,
         inst.gamma),
    ]  # fmt: skip
    cons = [optimize.LinearConstraint(sparse.csr_array(a), lo, hi) for a, lo, hi in rows]
    c = -np.concatenate([np.zeros(n), [x @ w - inst.capacity], -x, x * d])  # maximise
    lb = np.zeros(3 * n + 1)
    ub = np.concatenate([np.ones(n), [big], np.full(n, np.inf), np.full(n, big)])
    integ = np.concatenate([np.ones(n), np.zeros(2 * n + 1)])
    res = optimize.milp(c, constraints=cons, integrality=integ, bounds=optimize.Bounds(lb, ub),
                        options={"mip_rel_gap": 1e-9})  # fmt: skip
    if res.status != 0:
        raise RobustlabError(f"adversarial MILP failed: {res.message}")
    xi = np.round(res.x[:n])
    return float(recourse(inst, torch.as_tensor(x), torch.as_tensor(xi))), xi


def first_stage(inst: Instance) -> tuple[list[optimize.LinearConstraint], np.ndarray]:
    """First-stage rows over ``x`` (nominal fit, ``min_items``) and their matrix ``[2, n]``."""
    a = np.vstack([inst.weight, np.ones(inst.n)])
    return [optimize.LinearConstraint(a, [-np.inf, inst.min_items], [inst.capacity, np.inf])], a


def _master(inst: Instance, scenarios: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Master MILP over ``[x, theta, y^1 .. y^K]`` -> ``(x, theta, objective)``."""
    n, k = inst.n, len(scenarios)
    nv = n + 1 + k * n
    rows, lo, hi = [], [], []
    for s, xi in enumerate(scenarios):
        w = inst.weight + inst.dev * xi
        y0 = n + 1 + s * n
        r = np.zeros((n + 2, nv))
        r[0, n], r[0, y0 : y0 + n] = 1, -inst.penalty  # theta >= f . y^s
        r[1, :n], r[1, y0 : y0 + n] = w, -w  # W (x - y^s) <= C
        r[2:, y0 : y0 + n], r[2:, :n] = np.eye(n), -np.eye(n)  # y^s <= x
        rows.append(r)
        lo += [0, -np.inf] + [-np.inf] * n
        hi += [np.inf, inst.capacity] + [0] * n
    fs, a = first_stage(inst)
    cons = [optimize.LinearConstraint(sparse.csr_array(np.vstack(rows)), lo, hi)]
    cons.append(
        optimize.LinearConstraint(np.hstack([a, np.zeros((2, nv - n))]), fs[0].lb, fs[0].ub)
    )
    c = np.concatenate([-inst.profit, [1.0], np.zeros(k * n)])
    integ = np.concatenate([np.ones(n), np.zeros(nv - n)])
    ub = np.concatenate([np.ones(n), [np.inf], np.ones(k * n)])
    res = optimize.milp(c, constraints=cons, integrality=integ,
                        bounds=optimize.Bounds(np.zeros(nv), ub), options={"mip_rel_gap": 1e-9})  # fmt: skip
    if res.status == 2:
        raise InfeasibleError("knapsack instance infeasible: the CCG master has no solution")
    if res.status != 0:
        raise RobustlabError(f"CCG master MILP failed: {res.message}")
    return np.round(res.x[:n]), float(res.x[n]), float(res.fun)


def ccg(inst: Instance, tol: float = 1e-6, max_iter: int = 100) -> Solution:
    """Exact robust optimum by column-and-constraint generation (module docstring)."""
    inst.check()
    t0 = time.perf_counter()
    scenarios = [np.zeros(inst.n)]
    best_x, upper = None, np.inf
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        x, theta, lower = _master(inst, scenarios)
        worst, xi = worst_case(inst, x)
        value = -inst.profit @ x + worst
        if value < upper:
            best_x, upper = x, value
        if upper - lower <= tol * max(1.0, abs(upper)) or worst <= theta + tol:
            break
        scenarios.append(xi)
    assert best_x is not None
    return Solution(best_x, float(upper), it, time.perf_counter() - t0)


def brute_force(inst: Instance) -> Solution:
    """Every feasible first stage against every vertex of ``Xi`` (tiny instances only)."""
    inst.check()
    t0 = time.perf_counter()
    xs = torch.as_tensor(np.array(list(itertools.product([0.0, 1.0], repeat=inst.n))))
    ok = (xs @ torch.as_tensor(inst.weight) <= inst.capacity + 1e-12) & (
        xs.sum(1) >= inst.min_items
    )
    xs = xs[ok]
    v = torch.as_tensor(vertices(inst.n, inst.gamma))
    worst = recourse(inst, xs[:, None], v[None]).amax(1)
    obj = -xs @ torch.as_tensor(inst.profit) + worst
    i = int(obj.argmin())
    return Solution(xs[i].numpy(), float(obj[i]), 1, time.perf_counter() - t0)
