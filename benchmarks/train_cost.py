"""Cost to robustness: wall time of FGSM-RS and of S36 adversarial fine-tuning (AFT) to reach a held-out
PGD robust accuracy, against PGD-AT, on the same data and model, measured in one run.

Methods (all through ``robustlab.train``, a fresh temporary cache, the same seed and held-out batch):

- ``pgd-at``: PGD adversarial training from scratch (``steps`` PGD steps, constant lr);
- ``fgsm-rs``: FGSM with random start (Wong et al., 2020), constant lr;
- ``aft``: clean pre-training (``standard``, ``--pretrain`` epochs; its whole wall time is counted)
  then ``pgd-at`` fine-tuning with ``schedule: slow-start-fast-decay`` at peak lr ``--aft-lr``
  (Jeddi et al., 2020). The schedule depends on the number of fine-tuning epochs, so each
  length 1..``--aft-max`` is its own run; its cost is pre-training + that run.

Each epoch's held-out row (``on_epoch`` hook; PGD-``eval_steps`` at eps on ``--holdout`` examples
kept out of training) gives the robust accuracy; the time of that held-out evaluation is measured
separately and *not* counted (it is the same for every method). For every target accuracy the
script prints the first time each method reaches it and the ratio to PGD-AT's time; after
training, the final models' clean and PGD-20 accuracy on the test split.

    .venv/bin/python benchmarks/train_cost.py [--data digits|fashion-mnist] [--epochs 10]
        [--targets 0.70,0.75,0.80] [--threads 1]
    # on a loaded machine add --clock cpu (process CPU seconds)
    # full size: --data fashion-mnist --limit 10000 --side 28 --epochs 15 --targets 0.5,0.6,0.65
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import torch

import robustlab
import robustlab.training.loop as loop
from robustlab.attacks.pgd import PGD
from robustlab.core.registry import datasets
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel

EVAL_SECONDS = [0.0]  # held-out evaluation time of the current run (subtracted)
CLOCK = time.perf_counter  # --clock cpu: time.process_time


def _timed_evaluate(fn: Any) -> Any:
    def wrapped(*a: Any, **k: Any) -> Any:
        t = CLOCK()
        try:
            return fn(*a, **k)
        finally:
            EVAL_SECONDS[0] += CLOCK() - t

    return wrapped


def run(spec: dict[str, Any]) -> tuple[Any, list[tuple[int, float, float]]]:
    """Train ``spec``; returns the model and ``(epoch, training seconds so far, held-out PGD acc)``
    per epoch, the held-out evaluation time left out."""
    curve: list[tuple[int, float, float]] = []
    EVAL_SECONDS[0] = 0.0
    start = CLOCK()

    def on_epoch(row: dict[str, Any]) -> None:
        spent = CLOCK() - start - EVAL_SECONDS[0]
        curve.append((row["epoch"], spent, row["pgd_acc"]))

    clf = robustlab.train(spec, progress=False, on_epoch=on_epoch)
    return clf, curve


def first_reach(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    return next(((e, s) for e, s, acc in curve if acc >= target), None)


def test_accuracy(clf: Any, test: Any, eps: float) -> tuple[float, float]:
    with torch.no_grad():
        clean = float((clf.logits(test.x).argmax(1) == test.y).float().mean())
    res = PGD(steps=20)(
        clf, test.x, test.y, ThreatModel("inf", eps), rng=ExampleRNG.from_seed(0, test.ids)
    )
    return clean, 1.0 - float(res.success.float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits", choices=["digits", "fashion-mnist"])
    ap.add_argument("--limit", type=int, default=5000, help="fashion-mnist training images")
    ap.add_argument("--side", type=int, default=0, help="0: 8 for digits, 28 for fashion-mnist")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pretrain", type=int, default=5)
    ap.add_argument("--aft-lr", type=float, default=1e-2)
    ap.add_argument("--aft-max", type=int, default=3)
    ap.add_argument("--holdout", type=int, default=256)
    ap.add_argument("--targets", default="0.70,0.75,0.80")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cpu: process CPU seconds (steadier on a loaded machine)",
    )
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    side = args.side or (8 if args.data == "digits" else 28)
    data = {"name": args.data, "params": {"split": "train"}}
    if args.data == "fashion-mnist":
        data["params"]["limit"] = args.limit
    common = {"base": {"name": "small-cnn", "params": {"side": side}}, "data": data,
              "seed": args.seed, "holdout": args.holdout, "eval_eps": args.eps}  # fmt: skip
    targets = [float(t) for t in args.targets.split(",")]
    loop.evaluate = _timed_evaluate(loop.evaluate)  # time the held-out evaluation, to leave it out

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ROBUSTLAB_CACHE"] = tmp  # everything trains in this run
        p = {"eps": args.eps, "lr": args.lr}
        run({**common, "seed": args.seed + 1, "trainer": {"name": "pgd-at", "params": p},
             "epochs": 1})  # warm-up (imports, allocator, oneDNN plans), not reported  # fmt: skip
        curves: dict[str, list[tuple[int, float, float]]] = {}
        final: dict[str, Any] = {}
        final["pgd-at"], curves["pgd-at"] = run(
            {**common, "trainer": {"name": "pgd-at", "params": {**p, "steps": args.steps}},
             "epochs": args.epochs})  # fmt: skip
        final["fgsm-rs"], curves["fgsm-rs"] = run(
            {**common, "trainer": {"name": "fgsm-rs", "params": p}, "epochs": args.epochs}
        )
        pre = {**common, "trainer": {"name": "standard", "params": {"lr": args.lr}},
               "epochs": args.pretrain}  # fmt: skip
        final["standard"], pre_curve = run(pre)
        pre_s = pre_curve[-1][1]
        aft: dict[int, list[tuple[int, float, float]]] = {}
        for n in range(1, args.aft_max + 1):
            clf, c = run(
                {**common, "base": {"name": "trained", "params": pre},
                 "trainer": {"name": "pgd-at", "params": {"eps": args.eps, "lr": args.aft_lr,
                                                          "steps": args.steps}},
                 "schedule": "slow-start-fast-decay", "epochs": n})  # fmt: skip
            aft[n] = [(e, pre_s + s, acc) for e, s, acc in c]
            final[f"aft-{n}"] = clf
        # AFT of n epochs counts only when its run ends (the schedule is defined over all n)
        curves["aft"] = [(n, c[-1][1], c[-1][2]) for n, c in aft.items()]

        n_train = final["pgd-at"].provenance["train_examples"]
        print(f"Cost to robustness: {args.data} ({n_train} train, {args.holdout} held-out), "
              f"small-cnn side {side}, eps {args.eps} Linf, PGD-AT {args.steps} steps, lr "
              f"{args.lr}; AFT = {args.pretrain} standard epochs + pgd-at slow-start-fast-decay "
              f"peak lr {args.aft_lr}; threads {torch.get_num_threads()}; held-out PGD-10 "
              "accuracy, its evaluation time not counted")  # fmt: skip
        print("  curves (epoch: training seconds so far, held-out PGD accuracy):")
        for name, c in curves.items():
            unit = "AFT epochs" if name == "aft" else "epoch"
            pts = "  ".join(f"{e}: {s:.1f}s {acc:.3f}" for e, s, acc in c)
            print(f"  {name:8s} ({unit}) {pts}")
        print(f"  standard pre-training: {pre_s:.1f}s, held-out PGD {pre_curve[-1][2]:.3f}")
        for t in targets:
            ref = first_reach(curves["pgd-at"], t)
            cells = []
            for name in ("pgd-at", "fgsm-rs", "aft"):
                hit = first_reach(curves[name], t)
                if hit is None:
                    cells.append(f"{name} not reached")
                    continue
                ratio = f" = {hit[1] / ref[1]:.2f}x PGD-AT" if ref and name != "pgd-at" else ""
                cells.append(f"{name} {hit[1]:.1f}s (epoch {hit[0]}){ratio}")
            print(f"  target {t:.2f}: " + "; ".join(cells))
        test = datasets.create(args.data, {"split": "test", **({"limit": 2000} if
                                           args.data == "fashion-mnist" else {})})  # fmt: skip
        print(f"  final models on {len(test)} test images (clean / PGD-20):")
        for name, clf in final.items():
            clean, rob = test_accuracy(clf, test, args.eps)
            print(f"  {name:10s} {clean:.3f} / {rob:.3f}")


if __name__ == "__main__":
    main()
