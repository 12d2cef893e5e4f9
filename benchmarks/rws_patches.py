"""Robust Weight Signatures (S11) on digits: per-layer differences, patch size/accuracy, transfer.

Prints, for a small-cnn (and an MLP) fine-tuned from one digits-pretrained init on clean data and
on gaussian_blur severity 2 (``augment``): the per-layer relative weight difference, the blur
accuracy of the clean model with the patch (all layers / first k, float / int8 / int4, scales),
the composed blur + noise patch, and transfer to models fine-tuned from the same init on other
data: the other half of the digits train split, and Fashion-MNIST downsampled to 8x8 (another
dataset of the same shape). Usage: ``python benchmarks/rws_patches.py [--seed 0] [--plot out.png]``.
Numbers: docs/weight-patches.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import robustlab
from robustlab.core.registry import datasets
from robustlab.training import rws
from robustlab.training.augment import corruption_accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="rws-bench-"))
    os.environ.setdefault("ROBUSTLAB_CACHE", str(tmp / "cache"))
    tr, te = (
        datasets.create("digits", {"split": "train"}),
        datasets.create("digits", {"split": "test"}),
    )
    data = {}
    for name, sl in (("A", slice(0, None, 2)), ("B", slice(1, None, 2))):
        np.savez(tmp / f"{name}.npz", x=tr.x[sl].numpy(), y=tr.y[sl].numpy())
        data[name] = {"name": "npz", "params": {"path": str(tmp / f"{name}.npz")}}
    fm = {}
    for split, limit in (("train", 2000), ("test", 1000)):
        d = datasets.create("fashion-mnist", {"split": split, "limit": limit})
        np.savez(tmp / f"fm8-{split}.npz", x=F.interpolate(d.x, size=(8, 8), mode="area").numpy(),
                 y=d.y.numpy())  # fmt: skip
        fm[split] = {"name": "npz", "params": {"path": str(tmp / f"fm8-{split}.npz")}}
    data["FM"] = fm["train"]
    fm_te = datasets.create("npz", fm["test"]["params"])
    blur, noise = ("gaussian_blur", 2.0), ("gaussian_noise", 5.0)

    def acc(clf, c, d=te) -> float:  # type: ignore[no-untyped-def]
        return corruption_accuracy(clf, d.x, d.y, d.ids, *c)

    for base in ({"name": "small-cnn", "params": {"side": 8}},
                 {"name": "mlp", "params": {"side": 8, "hidden": 64}}):  # fmt: skip
        init = {"name": "trained", "params": {
            "base": base, "data": data["A"], "epochs": 5, "holdout": 0, "seed": args.seed,
            "trainer": {"name": "standard", "params": {"lr": 3e-3}}}}  # fmt: skip

        def tune(d: str, c: tuple[str, float] | None = None, _init=init):  # type: ignore[no-untyped-def]
            p = {"lr": 1e-3} | ({"perturbations": c[0], "severities": [c[1]]} if c else {})
            t = {"name": "augment" if c else "standard", "params": p}
            return robustlab.train({"base": _init, "data": data[d], "trainer": t, "epochs": 3,
                                    "holdout": 0, "seed": args.seed})  # fmt: skip

        ca, ra, na, cb, rb = (
            tune("A"),
            tune("A", blur),
            tune("A", noise),
            tune("B"),
            tune("B", blur),
        )
        print(f"\n== {base['name']} (seed {args.seed}) ==")
        rel = rws.layer_differences(ca, ra)
        print("relative difference ||R-C||/||C|| per layer (blur):",
              {k: round(v, 3) for k, v in rel.items()})  # fmt: skip
        print("relative difference per layer (noise):",
              {k: round(v, 3) for k, v in rws.layer_differences(ca, na).items()})  # fmt: skip
        if args.plot and base["name"] == "small-cnn":
            rws.plot_layers({"blur 2": rel, "noise 5": rws.layer_differences(ca, na)}, args.plot)
        n_model = sum(v.numel() * 4 for v in ca.module.state_dict().values()
                      if torch.is_floating_point(v))  # fmt: skip
        print(f"C_A clean {acc(ca, (blur[0], 0)):.3f} blur {acc(ca, blur):.3f}; R_A blur "
              f"{acc(ra, blur):.3f}; model {n_model} bytes")  # fmt: skip
        print("patch on C_A: layers bits scale -> clean / blur accuracy, patch bytes")
        for layers in (None, 1, 2, 3):
            for bits in (None, 8, 4):
                p = rws.extract(ca, ra, layers=layers, bits=bits)
                for s in (0.5, 1.0, 1.5):
                    with rws.apply(ca, [p], [s]):
                        print(f"  {layers!s:>4} {bits!s:>4} {s:3.1f} -> {acc(ca, (blur[0], 0)):.3f}"
                              f" / {acc(ca, blur):.3f}  {p.nbytes()}")  # fmt: skip
        pb, pn = rws.extract(ca, ra), rws.extract(ca, na)
        with rws.apply(ca, [pb, pn]):
            print(f"C_A + blur + noise patches: clean {acc(ca, (blur[0], 0)):.3f} blur "
                  f"{acc(ca, blur):.3f} noise {acc(ca, noise):.3f}")  # fmt: skip
        print(f"C_A noise {acc(ca, noise):.3f}; with the noise patch: ", end="")
        with rws.apply(ca, [pn]):
            print(f"{acc(ca, noise):.3f}")
        with rws.apply(cb, [pb]):
            patched = acc(cb, blur)
        print(f"transfer to C_B (other half): blur {acc(cb, blur):.3f} -> {patched:.3f} "
              f"(R_B, trained on blurred B: {acc(rb, blur):.3f})")  # fmt: skip
        cf, rf = tune("FM"), tune("FM", blur)
        for s in (0.5, 1.0):
            with rws.apply(cf, [pb], [s]):
                pf = (acc(cf, (blur[0], 0), fm_te), acc(cf, blur, fm_te))
            print(f"transfer to Fashion-MNIST 8x8 (scale {s}): clean/blur "
                  f"{acc(cf, (blur[0], 0), fm_te):.3f}/{acc(cf, blur, fm_te):.3f} -> "
                  f"{pf[0]:.3f}/{pf[1]:.3f} (trained on blurred FM: "
                  f"{acc(rf, (blur[0], 0), fm_te):.3f}/{acc(rf, blur, fm_te):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
