"""MVP-style prompt head vs MLP head on frozen MiniLM, clean and under TextFooler, +/- text-at.

Trains four models through ``robustlab.train`` (cached by content hash): ``minilm-mlp`` and
``minilm-mvp`` with the ``standard`` trainer for ``--epochs`` and with ``text-at`` for as many
epochs, the last ``--at-epochs`` of them adversarial (TextFooler outputs of the current model added
to each batch; the first ones clean, TextAttack's ``num_clean_epochs``), plus the untrained (zero-shot) ``minilm-mvp``; then attacks the
test texts with robustlab's TextFooler (and with ``--genetic`` the genetic attack) and prints clean
and robust accuracy (a text counts as robust when its prediction is correct before and after the
attack). Numbers for docs/mvp.md; not a test (tests/test_text_adversarial_training.py holds the
small version).

    .venv/bin/python benchmarks/mvp_robustness.py [--data bbc-news|tweets] [--train 300]
        [--test 60] [--words 30] [--queries 30] [--budget 0.2] [--epochs 20] [--at-epochs 3]
        [--rows minilm-mlp:text-at,...] [--genetic]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import robustlab
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG

LR = {"minilm-mlp": 3e-3, "minilm-mvp": 1e-2}


def spec(data: str, dp: dict[str, Any], base: str, trainer: str, tp: dict[str, Any],
         epochs: int) -> dict[str, Any]:  # fmt: skip
    return {
        "base": {"name": base, "params": {"dataset": data, "data_params": dp}},
        "data": {"name": data, "params": {"split": "train", **dp}},
        "trainer": {"name": trainer, "params": {"lr": LR[base], "batch_size": 32, **tp}},
        "epochs": epochs,
        "holdout": 0,
    }


def robust(clf: Any, test: Any, atk: Any, budget: float) -> tuple[float, float]:
    with torch.no_grad():
        clean = clf.logits(test.x).argmax(1) == test.y
    res = atk(clf, test.x, test.y, budget, rng=ExampleRNG.from_seed(0, test.ids))
    with torch.no_grad():
        after = clf.logits(res.x_adv).argmax(1) == test.y
    return float(clean.float().mean()), float((clean & after).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="bbc-news")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=60)
    ap.add_argument("--words", type=int, default=30)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--at-epochs", type=int, default=3, help="the last ones adversarial")
    ap.add_argument("--rows", default="", help="e.g. minilm-mlp:text-at (default: all)")
    ap.add_argument("--genetic", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dp = {"limit": args.train, "max_words": args.words}
    test = datasets.create(
        args.data, {"split": "test", "limit": args.test, "max_words": args.words}
    )
    at = {"attack_params": {"max_candidates": 8, "max_queries": 20, "min_similarity": 0.0},
          "budget": args.budget}  # fmt: skip
    at["clean_epochs"] = args.epochs - args.at_epochs  # TextAttack's num_clean_epochs
    runs = [
        ("minilm-mlp", "standard", {}, args.epochs),
        ("minilm-mvp", "zero-shot", {}, 0),
        ("minilm-mvp", "standard", {}, args.epochs),
        ("minilm-mlp", "text-at", at, args.epochs),
        ("minilm-mvp", "text-at", at, args.epochs),
    ]
    if args.rows:
        runs = [r for r in runs if f"{r[0]}:{r[1]}" in args.rows.split(",")]
    probes = {"textfooler": attacks.create("textfooler", {"max_candidates": 8,
                                                          "max_queries": args.queries})}  # fmt: skip
    if args.genetic:
        probes["genetic"] = attacks.create("genetic", {"max_candidates": 8, "pop_size": 10,
                                                       "generations": 5})  # fmt: skip
    print(f"{args.data}: train {args.train}, test {len(test)} texts x {args.words} words; "
          f"word edit budget {args.budget}; attack queries <= {args.queries} per text")  # fmt: skip
    for base, trainer, tp, epochs in runs:
        t = time.process_time()
        if trainer == "zero-shot":
            clf = models.create(base, {"dataset": args.data, "data_params": dp})
        else:
            clf = robustlab.train(spec(args.data, dp, base, trainer, tp, epochs), progress=False)
        fit_s = time.process_time() - t
        cols = []
        for name, atk in probes.items():
            clean, rob = robust(clf, test, atk, args.budget)
            cols.append(f"{name} robust {rob:.3f}")
        print(f"{base:11s} {trainer:9s} clean {clean:.3f}  " + "  ".join(cols)
              + f"  (train/load {fit_s:.0f} s CPU)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
