"""S7 cost: a small robust teacher tuning a fraction of a large model vs full fine-tuning.

Digits (8x8); large model ``small-cnn`` of ``--width`` (default 128), pre-trained with
``standard`` (not counted); teacher ``small-cnn`` width 8 trained with ``augment`` (gaussian_blur
severities 1-2, half clean; counted). Then, for 1-3 epochs each: full fine-tuning of the large
model with ``augment`` vs ``teacher-transfer`` tuning its last ``--layers`` layers. Prints blur-2
and clean accuracy, trainable parameters, and the training time of each run (process CPU time and
wall time, one torch thread, fresh cache: every run trains). Timings depend on the machine's load:
compare within one run. Usage: ``python benchmarks/teacher_transfer.py [--width 128] [--seed 0]``.
Numbers: docs/teacher-transfer.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import robustlab
from robustlab.core.registry import datasets
from robustlab.training.augment import corruption_accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--teacher-width", type=int, default=8)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ["ROBUSTLAB_CACHE"] = tempfile.mkdtemp(prefix="tt-bench-")
    te = datasets.create("digits", {"split": "test"})
    data = {"name": "digits", "params": {"split": "train"}}
    aug = {"perturbations": "gaussian_blur", "severities": [1, 2], "clean_fraction": 0.5}

    def run(spec: dict) -> tuple:  # type: ignore[type-arg]
        c, w = time.process_time(), time.perf_counter()
        clf = robustlab.train({**spec, "holdout": 0, "seed": args.seed})
        cpu, wall = time.process_time() - c, time.perf_counter() - w
        clean = corruption_accuracy(clf, te.x, te.y, te.ids, "gaussian_blur", 0)
        blur = corruption_accuracy(clf, te.x, te.y, te.ids, "gaussian_blur", 2)
        return clf, clean, blur, cpu, wall

    large = {"name": "trained", "params": {
        "base": {"name": "small-cnn", "params": {"side": 8, "width": args.width}}, "data": data,
        "trainer": {"name": "standard", "params": {"lr": 3e-3}}, "epochs": 5, "holdout": 0,
        "seed": args.seed}}  # fmt: skip
    teacher = {"name": "trained", "params": {
        "base": {"name": "small-cnn", "params": {"side": 8, "width": args.teacher_width}},
        "data": data, "trainer": {"name": "augment", "params": {**aug, "lr": 3e-3}},
        "epochs": args.teacher_epochs, "holdout": 0,
        "seed": args.seed}}  # fmt: skip
    big, clean, blur, cpu, wall = run(large["params"])
    n = sum(p.numel() for p in big.module.parameters())
    print(f"large small-cnn width {args.width}: {n} weights; clean {clean:.3f} blur-2 {blur:.3f} "
          f"(pre-training {cpu:.1f} s CPU, not counted)")  # fmt: skip
    t, clean, blur, t_cpu, t_wall = run(teacher["params"])
    nt = sum(p.numel() for p in t.module.parameters())
    print(f"teacher small-cnn width {args.teacher_width}, {args.teacher_epochs} epochs: {nt} weights; clean {clean:.3f} blur-2 {blur:.3f}; "
          f"training {t_cpu:.1f} s CPU / {t_wall:.1f} s wall")  # fmt: skip
    print("method            epochs  clean  blur-2  trainable  CPU s  wall s")
    for epochs in (1, 2, 3):
        for name, trainer in (
            ("full augment", {"name": "augment", "params": {**aug, "lr": 1e-3}}),
            ("teacher-transfer", {"name": "teacher-transfer", "params": {
                **aug, "teacher": teacher, "layers": args.layers, "temperature": 4.0, "alpha": args.alpha,
                "lr": 3e-3}}),
        ):  # fmt: skip
            clf, clean, blur, cpu, wall = run({"base": large, "data": data, "trainer": trainer,
                                               "epochs": epochs})  # fmt: skip
            before = big.module.state_dict()
            moved = sum(v.numel() for k, v in clf.module.state_dict().items()
                        if torch.is_floating_point(v) and not k.endswith(("running_mean", "running_var"))
                        and not torch.equal(v, before[k]))  # fmt: skip
            print(
                f"{name:17} {epochs:6}  {clean:.3f}  {blur:.3f}   {moved:8}  {cpu:5.1f}  {wall:6.1f}"
            )


if __name__ == "__main__":
    main()
