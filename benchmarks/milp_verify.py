"""Exact MILP verification, today's code (commit c093608) vs the new staged verifier, side by side.

Issue 22: exact verification of a 784-64-32-10 ReLU MLP on Fashion-MNIST at Linf 0.01 took
~28 s per example and left most examples undecided at a 10 s limit; target: >= 10x less time per
decided example. The model is trained here through robustlab's ``trained`` mechanism (standard
training, 60,000 Fashion-MNIST train images, 5 epochs, Adam lr 1e-3, seed 0; base
``bench-mlp-784-64-32`` registered by this script) and cached (first run: a few minutes).

Both sides verify the same examples (the first ``--n`` Fashion-MNIST test images) with the
certifier ``MILPVerifier(eps, time_limit)`` and the same ``time_limit`` per MILP solve:

* **old**: ``milp.py`` and ``milp_chain.py`` read from git at ``c093608`` into temporary modules
  (``git show``; the ``@certifiers.register`` line is dropped so it does not clash with the
  registered one): interval big-M bounds, a MILP per class not proven by interval arithmetic.
* **new**: the working tree: linear-relaxation (CROWN) bounds, then PGD, then MILPs with a cutoff.

Printed: per example the verdict (R robust, C counterexample, U undecided), the deciding stage of
the new code and the wall seconds of each side (the certifier's ``milp_seconds``); per side the
decided count, CPU seconds (``time.process_time``, the whole process: HiGHS included) and wall
seconds, **time per decided example** (total time / decided; the undecided examples' time is
charged to the decided ones) and the mean time over the decided examples only, and the ratios
old / new; the verdicts compared on every example both sides decide (any difference: exit 1);
the sandwich IBP-certified <= exact <= under PGD (50 steps x 3 restarts) as accuracies. The new
side (milliseconds) runs ``--repeats`` times interleaved with the old one's single run (or
``--old-repeats``); medians are reported. Load average and threads are printed.

Run: ``.venv/bin/python benchmarks/milp_verify.py`` (default: 20 examples, eps 0.01, limit 10 s;
~2-4 min, nearly all of it the old code). More: ``--time-limits 10 60``, ``--eps 0.01 0.02``,
``--n 50``, ``--old-repeats 2``; ``--skip-old`` for the new side only.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import robustlab
from robustlab.certify.ibp import IntervalBounds
from robustlab.certify.milp import MILPVerifier, decide, relu_chain
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG, seeded
from robustlab.core.types import Domain, ThreatModel
from robustlab.models.torch_adapter import TorchClassifier

OLD_COMMIT = "c093608"
ROOT = Path(__file__).resolve().parents[1]
BASE = "bench-mlp-784-64-32"
SPEC = {
    "base": {"name": BASE},
    "data": {"name": "fashion-mnist", "params": {"split": "train"}},
    "trainer": {"name": "standard", "params": {"lr": 1e-3}},
    "epochs": 5,
    "seed": 0,
}


@models.register(BASE)
def bench_mlp(init_seed: int = 0) -> TorchClassifier:
    """An untrained 784-64-32-10 ReLU MLP for 28x28 grey images (the benchmark's base)."""
    with seeded(init_seed):
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32),
                            nn.ReLU(), nn.Linear(32, 10))  # fmt: skip
    return TorchClassifier(net.eval(), 10, Domain(0.0, 1.0, (1, 28, 28)), name=BASE)


def old_module() -> Any:
    """``milp.py`` (with its ``milp_chain.py``) as of :data:`OLD_COMMIT`, as a fresh module."""
    tmp = Path(tempfile.mkdtemp(prefix="milp_old_"))
    mods = {}
    for name in ("milp_chain", "milp"):
        src = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:src/robustlab/certify/{name}.py"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        src = src.replace("from robustlab.certify.milp_chain import", "from milp_chain_old import")
        src = src.replace('@certifiers.register("milp")\n', "")
        path = tmp / f"{name}_old.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"{name}_old", path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[f"{name}_old"] = mod
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        mods[name] = mod
    return mods["milp"]


def run_side(verifier: Any, model: Any, x: torch.Tensor, y: torch.Tensor, ids: Any) -> dict:
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    cert = verifier.certify(model, x, y, rng=ExampleRNG.from_seed(0, ids))
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    status = cert.extra["milp_status"].numpy()
    return {"status": status, "secs": cert.extra["milp_seconds"].numpy(), "cpu": cpu,
            "wall": wall, "ok": ((cert.pred == y) & (cert.radius >= verifier.eps)).numpy()}  # fmt: skip


def summary(runs: list[dict]) -> dict:
    decided = int((runs[0]["status"] != 2).sum())
    cpu = statistics.median(r["cpu"] for r in runs)
    wall = statistics.median(r["wall"] for r in runs)
    secs = np.median(np.stack([r["secs"] for r in runs]), axis=0)
    d = runs[0]["status"] != 2
    return {"decided": decided, "cpu": cpu, "wall": wall, "per_cpu": cpu / max(decided, 1),
            "per_wall": wall / max(decided, 1), "mean_decided": float(secs[d].mean()) if decided
            else float("nan"), "secs": secs}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="first N Fashion-MNIST test images")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.01])
    ap.add_argument("--time-limits", type=float, nargs="+", default=[10.0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of the new side (median)")
    ap.add_argument("--old-repeats", type=int, default=1, help="runs of the old side (median)")
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = robustlab.train(SPEC, progress=False)
    print(f"model: {BASE} trained ({SPEC['epochs']} epochs, standard), "
          f"{time.perf_counter() - t0:.1f} s to load/train")  # fmt: skip
    d = datasets.create("fashion-mnist", {"split": "test", "limit": args.n})
    x, y, ids = d.x, d.y, d.ids
    with torch.no_grad():
        clean = float((model.logits(x).argmax(1) == y).float().mean())
    old = None if args.skip_old else old_module()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()}, {args.n} examples, clean accuracy {clean:.2f}")  # fmt: skip
    bad = 0
    for eps in args.eps:
        ibp = IntervalBounds(eps=eps).certify(model, x, y, rng=ExampleRNG.from_seed(0, ids))
        ok_ibp = ((ibp.pred == y) & (ibp.radius >= eps)).numpy()
        pgd = attacks.create("pgd", {"steps": 50, "restarts": 3})
        adv = pgd(model, x, y, ThreatModel("inf", eps), rng=ExampleRNG.from_seed(1, ids))
        ok_pgd = (~adv.success).numpy()
        for limit in args.time_limits:
            print(f"\n== eps {eps}, time_limit {limit} s per MILP solve, "
                  f"load average {os.getloadavg()} ==")  # fmt: skip
            new_runs, old_runs = [], []
            for r in range(max(args.repeats, 0 if old is None else args.old_repeats)):
                if r < args.repeats:
                    new_runs.append(
                        run_side(MILPVerifier(eps=eps, time_limit=limit), model, x, y, ids)
                    )
                if old is not None and r < args.old_repeats:
                    old_runs.append(
                        run_side(old.MILPVerifier(eps=eps, time_limit=limit), model, x, y, ids)
                    )
            new = summary(new_runs)
            chain = relu_chain(model)
            with torch.no_grad():
                pred = model.logits(x).argmax(1).numpy()
            stage = decide(model, chain, x, pred, eps, limit, rng=ExampleRNG.from_seed(0, ids))[
                "stage"
            ]
            letters = np.array(["R", "C", "U"])
            sides = [("new", new, new_runs[0])]
            if old_runs:
                sides.insert(0, ("old", summary(old_runs), old_runs[0]))
            print(f"{'ex':>3} {'label':>5} " + " ".join(f"{n:>4} {n + ' s':>8}" for n, _, _ in sides)
                  + "  new stage")  # fmt: skip
            for i in range(args.n):
                cells = " ".join(
                    f"{letters[r['status'][i]]:>4} {s['secs'][i]:8.3f}" for _, s, r in sides
                )
                print(f"{i:>3} {int(y[i]):>5} {cells}  {['bounds', 'attack', 'milp'][stage[i]]}")
            for name, s, r in sides:
                print(f"{name}: decided {s['decided']}/{args.n}, CPU {s['cpu']:.2f} s, wall "
                      f"{s['wall']:.2f} s; per decided example: CPU {s['per_cpu']:.3f} s, wall "
                      f"{s['per_wall']:.3f} s; mean over decided only {s['mean_decided']:.3f} s; "
                      f"exact robust accuracy {r['ok'].mean():.2f}")  # fmt: skip
            if old_runs:
                o, nr = old_runs[0], new_runs[0]
                both = (o["status"] != 2) & (nr["status"] != 2)
                diff = int((o["status"][both] != nr["status"][both]).sum())
                bad += diff
                so = sides[0][1]
                print(f"ratio old/new per decided example: CPU {so['per_cpu'] / new['per_cpu']:.0f}x, "
                      f"wall {so['per_wall'] / new['per_wall']:.0f}x; mean over decided only "
                      f"{so['mean_decided'] / new['mean_decided']:.0f}x (target >= 10x); verdicts "
                      f"differ on {diff} of {int(both.sum())} examples both decide")  # fmt: skip
            ok_new = new_runs[0]["ok"]
            print(f"sandwich (accuracy): IBP-certified {ok_ibp.mean():.2f} <= exact "
                  f"{ok_new.mean():.2f} (+{int((new_runs[0]['status'] == 2).sum())} undecided) "
                  f"<= under PGD-50x3 {ok_pgd.mean():.2f}; violated: "
                  f"{bool((ok_ibp > ok_new).any() or (ok_new > ok_pgd).any())}")  # fmt: skip
            bad += int((ok_ibp > ok_new).any() or (ok_new > ok_pgd).any())
    print(f"\nload average at the end {os.getloadavg()}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
