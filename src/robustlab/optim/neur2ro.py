"""Neur2RO: a learned second-stage value network inside column-and-constraint generation.

Dumouchelle, Julien, Kurtz & Khalil, "Neur2RO: Neural Two-Stage Robust Optimization" (ICLR 2024).
A small ReLU MLP ``phi(x, xi, instance) ~ Q(x, xi)`` is trained on sampled (first stage, scenario,
instance) triples labelled by the exact second stage (:func:`robustlab.optim.knapsack.recourse`),
then replaces the second stage in CCG: the master ``min -p.x + theta, theta >= phi(x, xi^s)`` holds
one copy of the network per scenario, and the adversarial problem ``max_xi phi(x, xi)`` is one
copy with ``x`` fixed and ``xi`` binary under the budget. Both are MILPs through the exact big-M
ReLU encoding of :class:`robustlab.certify.milp.Problem` (the network read by
:func:`robustlab.certify.milp_chain.relu_chain`), solved by HiGHS. Neur2RO's decision is then
evaluated exactly (:func:`robustlab.optim.knapsack.worst_case`).

Example::

    net = train_value_network(n=8, gamma=2, seed=0)     # ValueNetwork (cached on disk)
    sol = neur2ro(net, generate(10, 3, seed=123))         # Solution, objective evaluated exactly
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, sparse
from torch import nn

from robustlab.certify.milp import Problem
from robustlab.certify.milp_chain import ReluChain, relu_chain
from robustlab.core.errors import ConfigError, RobustlabError
from robustlab.core.types import Domain
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.training import cached_module
from robustlab.optim.knapsack import (
    InfeasibleError,
    Instance,
    Solution,
    first_stage,
    generate,
    recourse,  # fmt: skip
    worst_case,
)

SCALE = 10.0  # weights, penalties and Q are divided by this in the network's input and output
TRAIN_SEED_OFFSET = 1 << 20  # training instances use seeds from here (held-out ones stay below)


def _terms(inst: Instance) -> tuple[np.ndarray, ...]:
    """Per-item ``(W_0, dW, f, r_0, dr)``: weight and cost ratio at ``xi_i = 0`` and their change
    at ``xi_i = 1`` (``xi`` is binary, so ``W_i = W_0 + xi_i dW`` and ``f_i / W_i = r_0 + xi_i dr``
    exactly)."""
    w, d, f = inst.weight, inst.dev, inst.penalty
    return w, d, f, f / w, f / (w + d) - f / w


def network_input(inst: Instance, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """``[x W / S, x f / S, x f / W, xi, C / (n S)]`` rows (float32) for binary batches ``x``,
    ``xi`` (``[B, n]``), ``S = SCALE``: every entry is linear in ``x`` for a fixed ``xi`` and in
    ``xi`` for a fixed ``x``, so each CCG MILP sees an affine input map (:func:`affine_input`)."""
    w0, dw, f, r0, dr = (torch.as_tensor(t) for t in _terms(inst))
    x, xi = x.double(), xi.double()
    cap = torch.full((len(x), 1), inst.capacity / (inst.n * SCALE), dtype=torch.float64)
    u = [x * (w0 + xi * dw) / SCALE, x * f / SCALE, x * (r0 + xi * dr), xi, cap]
    return torch.cat(u, 1).float()


def affine_input(
    inst: Instance, x: np.ndarray | None = None, xi: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, c)`` with ``network_input = M z + c`` where ``z`` is ``x`` (when ``xi`` is given) or
    ``xi`` (when ``x`` is given), ``M``: ``[4n + 1, n]``."""
    n = inst.n
    w0, dw, f, r0, dr = _terms(inst)
    eye, zero = np.eye(n), np.zeros(n)
    if (x is None) == (xi is None):
        raise ValueError("affine_input: fix exactly one of x and xi")
    if xi is not None:  # z = x
        m = np.vstack([eye * (w0 + xi * dw) / SCALE, eye * f / SCALE, eye * (r0 + xi * dr),
                       np.zeros((n + 1, n))])  # fmt: skip
        c = np.concatenate([zero, zero, zero, xi, [inst.capacity / (n * SCALE)]])
    else:  # z = xi
        m = np.vstack([eye * x * dw / SCALE, np.zeros((n, n)), eye * x * dr, eye, np.zeros((1, n))])
        c = np.concatenate([x * w0 / SCALE, x * f / SCALE, x * r0, zero,
                            [inst.capacity / (n * SCALE)]])  # fmt: skip
    return m, c


def folded(chain: ReluChain, m: np.ndarray, c: np.ndarray) -> ReluChain:
    """``chain`` composed with the input map ``z -> M z + c`` (folded into the first layer)."""
    w0, b0 = chain.weights[0], chain.biases[0]
    return ReluChain([w0 @ m, *chain.weights[1:]], [b0 + w0 @ c, *chain.biases[1:]])


@dataclass
class ValueNetwork:
    """A trained ``phi`` for the family ``generate(n, gamma, .)``: a one-output white-box
    :class:`TorchClassifier` (so the MILP encoding reads it) and its dense ReLU chain."""

    clf: TorchClassifier
    n: int
    gamma: int
    train_mae: float  # mean absolute error of Q on held-out samples, in objective units

    def fingerprint(self) -> str:
        """A content hash of the weights (recorded with every run)."""
        return self.clf.fingerprint()

    @property
    def chain(self) -> ReluChain:
        return relu_chain(self.clf)

    def predict(self, inst: Instance, x: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.clf.module(network_input(inst, x, xi))[:, 0].double() * SCALE


def samples(n: int, gamma: int, instances: int, per: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``(inputs, Q / SCALE)`` for ``per`` random (x, xi) pairs on each of ``instances`` training
    instances (seeds ``TRAIN_SEED_OFFSET + seed * instances + k``): ``x`` Bernoulli with a random
    rate, ``xi`` a random vertex with ``Gamma`` ones (80 %) or fewer."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for k in range(instances):
        inst = generate(n, gamma, TRAIN_SEED_OFFSET + seed * instances + k)
        x = (torch.rand(per, n, generator=g) < torch.rand(per, 1, generator=g) * 0.6 + 0.2).double()
        ones = torch.where(torch.rand(per, generator=g) < 0.8, gamma,
                           torch.randint(0, gamma + 1, (per,), generator=g))  # fmt: skip
        rank = torch.rand(per, n, generator=g).argsort(1).argsort(1)
        xi = (rank < ones[:, None]).double()
        xs.append(network_input(inst, x, xi))
        ys.append(recourse(inst, x, xi).float() / SCALE)
    return torch.cat(xs), torch.cat(ys)[:, None]


def _mlp(n: int, hidden: tuple[int, ...]) -> nn.Sequential:
    dims, layers = [4 * n + 1, *hidden], []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], 1))


def train_value_network(
    n: int = 8, gamma: int = 2, hidden: tuple[int, ...] = (16,), instances: int = 300,
    per: int = 64, epochs: int = 150, seed: int = 0,
) -> ValueNetwork:  # fmt: skip
    """Train ``phi`` (Adam, MSE, mini-batches of 256, seeded), cached on disk by every argument."""
    if n < 1 or not 0 <= gamma <= n or not hidden or min(hidden) < 1:
        raise ConfigError(f"neur2ro: need n >= 1, 0 <= gamma <= n, hidden sizes >= 1 (got "
                          f"n={n}, gamma={gamma}, hidden={hidden})")  # fmt: skip
    hidden = tuple(int(h) for h in hidden)
    x, y = samples(n, gamma, instances, per, seed)
    cut = len(x) * 9 // 10  # the last 10 % are held out for the reported error

    def train() -> nn.Module:
        torch.manual_seed(seed)
        net = _mlp(n, hidden)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(cut, generator=g).split(256):
                opt.zero_grad()
                nn.functional.mse_loss(net(x[idx]), y[idx]).backward()
                opt.step()
            sched.step()
        return net.eval()

    key = {"name": "neur2ro-knapsack", "n": n, "gamma": gamma, "hidden": list(hidden),
           "instances": instances, "per": per, "epochs": epochs, "seed": seed, "v": 2}  # fmt: skip
    net = cached_module(key, lambda: _mlp(n, hidden), train)
    with torch.no_grad():
        mae = float((net(x[cut:]) - y[cut:]).abs().mean()) * SCALE
    clf = TorchClassifier(net, 1, domain=Domain(0.0, 2.0, (4 * n + 1,)))
    return ValueNetwork(clf, n, gamma, mae)


def learned_worst_case(
    net: ValueNetwork, inst: Instance, x: np.ndarray, chain: ReluChain
) -> tuple[float, np.ndarray]:
    """``max_{xi in Xi} phi(x, xi)`` (objective units) and its ``xi``: one network copy over
    ``xi`` (``x`` folded into its input map), ``xi`` binary with ``sum xi <= Gamma``."""
    n = inst.n
    prob = Problem.build(folded(chain, *affine_input(inst, x=x)), np.zeros(n), np.ones(n))
    budget = np.zeros(len(prob.integrality))
    budget[:n] = 1
    integ = prob.integrality.copy()
    integ[:n] = 1
    prob = Problem(prob.chain, [*prob.cons, optimize.LinearConstraint(budget[None], -np.inf,
                   inst.gamma)], prob.bounds, integ, prob.last)  # fmt: skip
    _, best, z = prob.minimize(np.array([-1.0]), time_limit=60.0)
    if z is None:
        raise RobustlabError("neur2ro: the adversarial MILP found no scenario")
    return -best * SCALE, np.round(z[:n])


def learned_master(
    inst: Instance, scenarios: list[np.ndarray], chain: ReluChain
) -> tuple[np.ndarray, float]:
    """``min -p.x + theta, theta >= phi(x, xi^s)`` over ``[x, theta, copy_1, ..., copy_K]``; each
    copy is a network over ``x`` with ``xi^s`` folded into its input map."""
    n = inst.n
    copies = [Problem.build(folded(chain, *affine_input(inst, xi=xi)), np.zeros(n), np.ones(n))
              for xi in scenarios]  # fmt: skip
    nv = len(copies[0].integrality)
    total = n + 1 + nv * len(copies)
    blocks, lo, hi = [], [], []
    for s, cp in enumerate(copies):
        off = n + 1 + s * nv
        w_out, b_out = cp.chain.weights[-1][0], float(cp.chain.biases[-1][0])
        for con in cp.cons:  # the copy's ReLU rows, shifted to its columns
            a = sparse.coo_array(con.A)
            blocks.append(
                sparse.coo_array((a.data, (a.row, a.col + off)), shape=(a.shape[0], total))
            )
            lo.append(con.lb), hi.append(con.ub)
        link = sparse.lil_array((n + 1, total))  # the copy's x equals the master's x
        link[np.arange(n), np.arange(n)] = -1
        link[np.arange(n), off + np.arange(n)] = 1
        link[n, n] = 1  # theta - w_out . h_last >= b_out
        link[n, off + cp.last + np.arange(len(w_out))] = -w_out
        blocks.append(sparse.coo_array(link))
        lo.append(np.r_[np.zeros(n), b_out]), hi.append(np.r_[np.zeros(n), np.inf])
    fs, a = first_stage(inst)
    blocks.append(sparse.coo_array(np.hstack([a, np.zeros((2, total - n))])))
    lo.append(fs[0].lb), hi.append(fs[0].ub)
    cons = optimize.LinearConstraint(sparse.vstack(blocks).tocsr(), np.concatenate(lo),
                                     np.concatenate(hi))  # fmt: skip
    c = np.concatenate([-inst.profit, [SCALE], np.zeros(total - n - 1)])
    lb = np.concatenate([np.zeros(n), [-np.inf], *[cp.bounds.lb for cp in copies]])
    ub = np.concatenate([np.ones(n), [np.inf], *[cp.bounds.ub for cp in copies]])
    integ = np.concatenate([np.ones(n), [0], *[cp.integrality for cp in copies]])
    res = optimize.milp(c, constraints=[cons], integrality=integ, bounds=optimize.Bounds(lb, ub),
                        options={"mip_rel_gap": 1e-6, "time_limit": 120.0})  # fmt: skip
    if res.status == 2:
        raise InfeasibleError("knapsack instance infeasible: the Neur2RO master has no solution")
    if res.x is None:
        raise RobustlabError(f"neur2ro master MILP failed: {res.message}")
    return np.round(res.x[:n]), float(res.x[n]) * SCALE


def neur2ro(net: ValueNetwork, inst: Instance, tol: float = 1e-4, max_iter: int = 20) -> Solution:
    """Neur2RO's first-stage decision, its robust objective evaluated exactly, and the time
    of the learned CCG loop (the exact evaluation is not timed)."""
    inst.check()
    if inst.n != net.n or inst.gamma != net.gamma:
        raise ConfigError(f"neur2ro: network trained for n={net.n}, gamma={net.gamma}; the "
                          f"instance has n={inst.n}, gamma={inst.gamma}")  # fmt: skip
    t0 = time.perf_counter()
    chain = net.chain
    scenarios = [np.zeros(inst.n)]
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        x, theta = learned_master(inst, scenarios, chain)
        value, xi = learned_worst_case(net, inst, x, chain)
        if value <= theta + tol or any((xi == s).all() for s in scenarios):
            break
        scenarios.append(xi)
    seconds = time.perf_counter() - t0
    worst, _ = worst_case(inst, x)
    return Solution(x, float(-inst.profit @ x + worst), it, seconds)
