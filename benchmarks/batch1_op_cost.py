"""What one tensor op costs inside a batch-1 attack loop, vs in a tight loop of its own.

At batch 1 the small CNN's forward + input-gradient pass (the "limit" of benchmarks/
attacks_vs_peers.py) takes ~0.7 ms on this CPU. Every op an attack adds between two passes -- the
domain check, ``sign``/``add``/``clamp`` of a step, the random start -- runs with caches that the
pass has just evicted, so it costs several times what it costs in a tight loop of its own. This
script measures both for the ops a gradient attack cannot do without, and prints the share of the
limit they add up to: the floor under ``attack time / limit`` at batch 1.

    .venv/bin/python benchmarks/batch1_op_cost.py [--rounds 15] [--inner 300]

Process CPU time, one thread; each figure is the best of ``--rounds`` interleaved rounds of
``--inner`` calls. An in-loop cost is ``time(op + pass) - time(pass)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import torch
from attacks_vs_peers import best_time, limit  # the same limit and clock (process CPU time)

from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models.nets import SmallCNN


def per_call(fn: Callable[[], object], inner: int) -> float:
    return best_time(fn, 1, inner=inner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=300)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = SmallCNN(1, 10, 28, 16).eval()
    dom, th = Domain(0.0, 1.0, (1, 28, 28)), ThreatModel("inf", 8 / 255)
    x = torch.rand(1, 1, 28, 28)
    y = net(x).argmax(1)
    rng = ExampleRNG.from_seed(0, torch.arange(1))
    g, cur = torch.randn_like(x), x.clone()
    lo, hi = (x - th.eps).clamp_min(0), (x + th.eps).clamp_max(1)

    step = partial(limit, net, x, y, 1)  # one forward + input-gradient pass

    ops: dict[str, tuple[Callable[[], object], str]] = {
        "python no-op": (lambda: None, "calling a Python function"),
        "one elementwise op": (lambda: x.add(0), "x.add(0) on 784 floats"),
        "domain check": (lambda: dom.check(x, "x"), "Domain.check: shape, NaN/inf and range"),
        "Linf step": (
            lambda: cur.add_(g.sign(), alpha=1e-3).clamp_(lo, hi),
            "sign, add, clamp: one PGD/FGSM step",
        ),
        "random start": (lambda: rng.uniform(1, 28, 28), "seeded uniform draw, 784 numbers"),
    }
    alone = {k: float("inf") for k in ops}
    inloop = {k: float("inf") for k in ops}
    base = float("inf")
    for _ in range(a.rounds):  # interleaved: load on the machine hits every figure alike
        base = min(base, per_call(step, a.inner))
        for k, (op, _) in ops.items():
            alone[k] = min(alone[k], per_call(op, a.inner * 4))
            inloop[k] = min(inloop[k], per_call(lambda op=op: (op(), step()), a.inner))
    print(f"torch {torch.__version__}, 1 thread, process CPU time")
    print(f"limit (forward + input-gradient pass, batch 1): {base * 1e6:7.1f} us")
    print(f"{'op':20s} {'alone':>9s} {'in loop':>9s} {'share of limit':>15s}")
    extra = {k: max(inloop[k] - base, 0.0) for k in ops}
    for k, (_, what) in ops.items():
        print(
            f"{k:20s} {alone[k] * 1e6:7.1f}us {extra[k] * 1e6:7.1f}us {extra[k] / base:14.1%}   {what}"
        )
    fgsm = extra["domain check"] + extra["Linf step"]
    pgd = fgsm + 9 * extra["Linf step"] + extra["random start"]
    print(
        f"floor of FGSM (domain check + one step) at batch 1: {1 + fgsm / base:.3f}x the limit; "
        f"of PGD-10 (check + random start + 10 steps): {1 + pgd / (10 * base):.3f}x"
    )


if __name__ == "__main__":
    main()
