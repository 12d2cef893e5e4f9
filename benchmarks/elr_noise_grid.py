"""ELR vs cross-entropy over a label-noise grid (S31), and black-box feature tuning (S38).

Part 1 (ELR): for each noise kind (symmetric, asymmetric) and rate (default 0.2, 0.4, 0.6), train
``small-cnn`` with the ``standard`` trainer (cross-entropy) and with ``elr`` on the ``noisy-labels``
transform of the training data, then print the clean-test accuracy and the memorisation (the
fraction of training examples with a wrong label on which the model predicts that wrong label;
"corrected": predicts the clean one). Symmetric noise is ELR's definition (``draw: any``).

Part 2 (``--nmtune``): pre-train ``small-cnn`` on Fashion-MNIST train images with symmetric noise
at each ``--pre-rates`` rate, then tune a linear probe, an MLP and NMTune on the frozen features of
1,000 clean Fashion-MNIST test images (``feature-tuned``) and print ID accuracy on 2,000 other
test images and OOD accuracy on those images corrupted (gaussian_noise, contrast, gaussian_blur,
brightness, severity 3), with the tuned features' singular value entropy / largest singular value
ratio (the paper's SVE / LSVR).

    .venv/bin/python benchmarks/elr_noise_grid.py [--data digits|fashion] [--epochs 20]
        [--rates 0.2,0.4,0.6] [--kinds symmetric,asymmetric] [--seeds 0] [--nmtune]
    # the numbers in docs/noisy-labels.md: defaults (digits, 20 epochs, lr 3e-3), seeds 0,1,2;
    # --data fashion --limit 5000 --epochs 20; --nmtune --seeds 0,1,2

Models are cached under ``$ROBUSTLAB_CACHE`` (default ``~/.cache/robustlab``): a second run prints
the same numbers without training. One torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import robustlab
from robustlab.core.registry import datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.training.nmtune import spectrum

CORRUPTIONS = ["gaussian_noise", "contrast", "gaussian_blur", "brightness"]


def elr_grid(args: argparse.Namespace) -> None:
    if args.data == "digits":
        base = {"name": "small-cnn", "params": {"side": 8}}
        inner = {"name": "digits", "params": {"split": "train"}}
        test = datasets.create("digits", {"split": "test"})
    else:
        base = {"name": "small-cnn", "params": {"side": 28}}
        inner = {"name": "fashion-mnist", "params": {"split": "train", "limit": args.limit}}
        test = datasets.create("fashion-mnist", {"split": "test", "limit": 2000})
    print(f"data {args.data}, small-cnn, {args.epochs} epochs, lr {args.lr}, seeds {args.seeds}, "
          f"ELR lam {args.lam} beta {args.beta}")  # fmt: skip
    print("kind        rate  trainer   test acc        memorised       corrected  (mean over seeds; per seed)")  # fmt: skip
    for kind in args.kinds:
        for rate in args.rates:
            for trainer in ("standard", "elr"):
                rows = []
                for seed in args.seeds:
                    data = {"name": "noisy-labels", "params": {"data": inner, "kind": kind, "rate": rate, "seed": seed}}  # fmt: skip
                    clf = robustlab.train({
                        "base": base, "data": data, "seed": seed, "epochs": args.epochs,
                        "holdout": 0, "trainer": {"name": trainer, "params": {
                            "lr": args.lr, **({"lam": args.lam, "beta": args.beta} if trainer == "elr" else {})}},
                    })  # fmt: skip
                    rows.append(scores(clf, datasets.create("noisy-labels", data["params"]), test))
                cols = list(zip(*rows, strict=True))
                print(f"{kind:11s} {rate:.1f}  {trainer:8s}  " + "  ".join(
                    f"{statistics.mean(c):.3f} ({'/'.join(f'{v:.3f}' for v in c)})" for c in cols
                ), flush=True)  # fmt: skip


def scores(clf: Any, train: Any, test: Any) -> tuple[float, float, float]:
    wrong = train.y != train.fields["clean_y"]
    with torch.no_grad():
        acc = float((clf.logits(test.x).argmax(1) == test.y).float().mean())
        pred = clf.logits(train.x[wrong]).argmax(1)
    mem = float((pred == train.y[wrong]).float().mean()) if wrong.any() else 0.0
    fixed = float((pred == train.fields["clean_y"][wrong]).float().mean()) if wrong.any() else 1.0
    return acc, mem, fixed


def nmtune_grid(args: argparse.Namespace) -> None:
    te = datasets.create("fashion-mnist", {"split": "test", "limit": 3000}).take(range(1000, 3000))
    ood = {
        c: perturbations.create(c)(te.x, 3, ExampleRNG.from_seed(0, te.ids)).clamp(0, 1)
        for c in CORRUPTIONS
    }
    down = {"name": "fashion-mnist", "params": {"split": "test", "limit": 1000}}
    print(f"\nS38: small-cnn pre-trained {args.pre_epochs} epochs on {args.pre_limit} Fashion-MNIST "
          "train images with symmetric noise; heads on 1,000 clean test images; ID = 2,000 other "
          "test images, OOD = mean over 4 corruptions at severity 3")  # fmt: skip
    print("pre-noise  method        ID      OOD     SVE   LSVR   (mean over seeds)")
    for rate in args.pre_rates:
        for method in ("linear-probe", "mlp", "nmtune"):
            rows = []
            for seed in args.seeds:
                pre = {"name": "trained", "params": {
                    "base": {"name": "small-cnn", "params": {"side": 28}},
                    "data": {"name": "noisy-labels", "params": {
                        "data": {"name": "fashion-mnist", "params": {"split": "train", "limit": args.pre_limit}},
                        "kind": "symmetric", "rate": rate, "seed": seed}},
                    "trainer": {"name": "standard", "params": {"lr": 3e-3}},
                    "epochs": args.pre_epochs, "holdout": 0, "seed": seed}}  # fmt: skip
                clf = models.create("feature-tuned", {"features": pre, "data": down, "method": method, "seed": seed})  # fmt: skip
                with torch.no_grad():
                    ida = float((clf.logits(te.x).argmax(1) == te.y).float().mean())
                    oo = [float((clf.logits(v).argmax(1) == te.y).float().mean()) for v in ood.values()]  # fmt: skip
                    tr = datasets.create(down["name"], down["params"])
                    sp = spectrum(clf.module.head.transform(clf.module.extractor(tr.x)))
                rows.append((ida, statistics.mean(oo), sp["sve"], sp["lsvr"]))
            m = [statistics.mean(c) for c in zip(*rows, strict=True)]
            print(f"{rate:.1f}        {method:12s}  {m[0]:.3f}   {m[1]:.3f}   {m[2]:.2f}  {m[3]:.2f}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=["digits", "fashion"], default="digits")
    p.add_argument("--limit", type=int, default=5000, help="Fashion-MNIST training images")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lam", type=float, default=3.0, help="ELR's lambda")
    p.add_argument("--beta", type=float, default=0.7, help="ELR's target momentum")
    p.add_argument("--rates", default="0.2,0.4,0.6")
    p.add_argument("--kinds", default="symmetric,asymmetric")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nmtune", action="store_true", help="also run the S38 comparison")
    p.add_argument("--only-nmtune", action="store_true")
    p.add_argument("--pre-rates", default="0.0,0.4")
    p.add_argument("--pre-limit", type=int, default=4000)
    p.add_argument("--pre-epochs", type=int, default=5)
    args = p.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    args.kinds = args.kinds.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.pre_rates = [float(r) for r in args.pre_rates.split(",")]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not args.only_nmtune:
        elr_grid(args)
    if args.nmtune or args.only_nmtune:
        nmtune_grid(args)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
