"""S17 adaptive smoothing at small scale: clean and robust accuracy of a standard model, a PGD-AT
model, their fixed-alpha mixtures and the learned mixing network, every attack through the whole
mixture (per-example union of PGD-10, APGD-CE-20, APGD-DLR-20 and, with --square, Square).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adaptive_smoothing.py --data fashion-mnist \
        --limit 2000 --epochs 3 --eps 0.1 --seeds 0 1

Prints one line per model: clean accuracy, PGD-10 accuracy, union accuracy. Numbers in
docs/defences.md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import robustlab
from robustlab.attacks.apgd import APGD
from robustlab.attacks.pgd import PGD
from robustlab.attacks.square import Square
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel


def accuracies(clf: Any, data: Any, eps: float, square: int) -> tuple[float, float, float]:
    x, y, threat = data.x, data.y, ThreatModel("inf", eps)
    with torch.no_grad():
        clean = float((clf.logits(x).argmax(1) == y).float().mean())
    runs: list[Any] = [PGD(steps=10), APGD(loss="ce", steps=20), APGD(loss="dlr", steps=20)]
    runs += [Square(n_queries=square)] if square else []
    fooled = torch.zeros(len(y), dtype=torch.bool)
    pgd = 0.0
    for i, attack in enumerate(runs):
        ok = attack(clf, x, y, threat, rng=ExampleRNG.from_seed(0, data.ids)).success.cpu()
        pgd = 1 - float(ok.float().mean()) if i == 0 else pgd
        fooled |= ok
    return clean, pgd, 1 - float(fooled.float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--alphas", type=float, nargs="*", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--reads", default="both")
    ap.add_argument("--mixer-epochs", type=int, default=2)
    ap.add_argument("--mixer-steps", type=int, default=5)
    ap.add_argument("--detector", type=float, default=1.0)
    ap.add_argument("--square", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    a = ap.parse_args()
    torch.set_num_threads(1)
    side = 8 if a.data == "digits" else 28
    train = {"name": a.data, "params": {"split": "train"}}
    if a.data != "digits":
        train["params"]["limit"] = a.limit
    test_params: dict[str, Any] = {"split": "test"}
    if a.data != "digits":
        test_params["limit"] = a.test
    te = datasets.create(a.data, test_params)
    for seed in a.seeds:

        def spec(trainer: str, seed: int = seed, **p: Any) -> dict[str, Any]:
            return {"name": "trained", "params": {
                "base": {"name": "small-cnn", "params": {"side": side}}, "data": train,
                "trainer": {"name": trainer, "params": {"lr": 3e-3, **p}},
                "epochs": a.epochs, "holdout": 128, "seed": seed}}  # fmt: skip

        std, rob = spec("standard"), spec("pgd-at", eps=a.eps)
        rows: dict[str, Any] = {
            "standard": models.create("trained", std["params"]),
            "robust": models.create("trained", rob["params"]),
        }
        for alpha in a.alphas:
            rows[f"alpha {alpha}"] = models.create(
                "mixed", {"standard": std, "robust": rob, "alpha": alpha}
            )
        t = time.perf_counter()
        rows["learned"] = robustlab.train({
            "base": {"name": "mixed", "params": {"standard": std, "robust": rob,
                                                 "mixer": "learned", "reads": a.reads}},
            "data": train, "epochs": a.mixer_epochs, "holdout": 128, "seed": seed,
            "trainer": {"name": "mixer", "params": {"eps": a.eps, "steps": a.mixer_steps,
                                                    "detector": a.detector}},
        })  # fmt: skip
        print(f"seed {seed}: mixer trained in {time.perf_counter() - t:.0f} s", flush=True)
        for name, clf in rows.items():
            c, p, u = accuracies(clf, te, a.eps, a.square)
            print(f"seed {seed} {name:>10}: clean {c:.3f}  pgd {p:.3f}  union {u:.3f}", flush=True)


if __name__ == "__main__":
    main()
