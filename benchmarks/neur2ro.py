"""S24 Neur2RO vs exact column-and-constraint generation at matched gap, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neur2ro.py --n 8 --gamma 2 --count 6

For each held-out instance of the robust knapsack family: Neur2RO (trained value network in the
CCG MILPs; training time printed once, not per instance) gives a decision whose exact robust
objective has relative gap ``g`` to the optimum; exact CCG is then run to optimality and with its
stopping tolerance set to ``g`` (CCG "at matched gap": it stops once its bounds are within ``g``).
CPU seconds (``time.process_time``, one torch thread) of each; ratios Neur2RO / CCG. Numbers in
docs/robust-optimization.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robustlab.optim.knapsack import ccg, generate
from robustlab.optim.neur2ro import neur2ro, train_value_network


def cpu(fn, *args, **kw):  # type: ignore[no-untyped-def]
    t = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--gamma", type=int, default=2)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=150)
    a = ap.parse_args()
    torch.set_num_threads(1)
    net, t_train = cpu(train_value_network, a.n, a.gamma, (a.hidden,), epochs=a.epochs)
    print(f"value network n={a.n} gamma={a.gamma} hidden={a.hidden}: held-out MAE of Q "
          f"{net.train_mae:.3f}, training (or cache load) {t_train:.1f} s CPU")  # fmt: skip
    rows = []
    for k in range(a.count):
        inst = generate(a.n, a.gamma, 1000 + k)
        exact, t_exact = cpu(ccg, inst)
        learned, t_n2r = cpu(neur2ro, net, inst)
        gap = (learned.objective - exact.objective) / abs(exact.objective)
        matched, t_matched = cpu(ccg, inst, tol=max(gap, 1e-6))
        mgap = (matched.objective - exact.objective) / abs(exact.objective)
        rows.append((gap, mgap, t_exact, t_matched, t_n2r))
        print(f"instance {k}: Neur2RO gap {gap:7.2%} ({learned.iterations} it, {t_n2r:6.2f} s) | "
              f"CCG exact {t_exact:5.2f} s ({exact.iterations} it) | CCG at gap<={gap:.2%}: "
              f"{t_matched:5.2f} s, gap {mgap:.2%} ({matched.iterations} it)")  # fmt: skip
    g, mg, te, tm, tn = (np.array(c) for c in zip(*rows, strict=True))
    print(f"mean gap: Neur2RO {g.mean():.2%} (max {g.max():.2%}), matched CCG {mg.mean():.2%}")
    print(f"CPU s per instance: Neur2RO {tn.mean():.2f}, CCG exact {te.mean():.2f}, CCG matched "
          f"{tm.mean():.2f}")  # fmt: skip
    print(f"ratio Neur2RO / CCG at matched gap: {tn.sum() / tm.sum():.2f}x; "
          f"Neur2RO / exact CCG: {tn.sum() / te.sum():.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
