"""Meaning-preservation constraints (issue 18): for each text attack and word-substitution
perturbation, the share of changed BBC texts that pass the constraints, with the constraints off
(the behaviour before issue 18) and on (the default), and the attack success rate / share of texts
changed. Prints one table; not a test.

    .venv/bin/python benchmarks/text_constraints.py --n 60 --words 40
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from robustlab.core.registry import attacks, datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.text.constraints import Constraints, check, tagger_name


def _mean(v: list[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--words", type=int, default=40)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--severity", type=float, default=0.3)
    ap.add_argument("--only", nargs="*", default=None, help="component names to run")
    a = ap.parse_args()
    torch.set_num_threads(1)
    clf = models.create("tfidf-logreg")
    data = datasets.create("bbc-news", {"split": "test", "limit": a.n, "max_words": a.words})
    x, y = list(data.x), data.y
    rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
    cfg = Constraints()
    print(f"BBC test, {len(x)} texts of <= {a.words} words, tfidf-logreg, tagger {tagger_name()}")
    print("component | constraints | changed | pass | violations | success (all texts) | cpu s")
    runs = [
        ("textfooler", {}, "attack"),
        ("beam", {"beam_width": 2}, "attack"),
        ("genetic", {"pop_size": 8, "generations": 4}, "attack"),
        ("random-substitution", {"tries": 5}, "attack"),
        ("synonym", {}, "perturbation"),
        ("embedding_swap", {}, "perturbation"),
    ]
    for name, params, kind in runs:
        if a.only and name not in a.only:
            continue
        for on in (False, True):
            t = time.process_time()
            if kind == "attack":
                atk = attacks.create(name, {**params, "constraints": on})
                res = atk(clf, x, y, a.budget, rng=rng)
                out, succ = res.x_adv, float(res.success.double().mean())
            else:
                p = perturbations.create(name, {**params, "constraints": on})
                out, succ = p(x, a.severity, rng), math.nan
            cpu = time.process_time() - t
            c = check(x, out, cfg, 0.8)
            passed = c["constraints_pass"]
            changed = sum(not math.isnan(v) for v in passed)
            viol: dict[str, int] = {}
            for v in c["constraint_violations"]:
                for k in (v or "").split(","):
                    if k:
                        viol[k] = viol.get(k, 0) + 1
            print(f"{name} | {'on' if on else 'off'} | {changed} | {_mean(passed):.3f} | "
                  f"{viol} | {succ:.3f} | {cpu:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
