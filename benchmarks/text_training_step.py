"""Text training step time: robustlab's loop vs a bare torch loop, same model and batches.

For ``minilm-mlp`` and ``minilm-mvp`` (models/text_heads.py) with the ``standard`` and ``text-at``
trainers: one training run of ``--epochs`` epochs through ``robustlab.training.loop.fit`` (the
loop's per-example streams, eval/train switches, per-epoch checkpoint write; no held-out split)
against the bare loop written directly in torch over the same permutations: per batch the same
``clf.logits`` on the texts (frozen MiniLM features from the same in-memory cache; for ``text-at``
first the same TextFooler call on the first ``ceil(adv_fraction x B)`` texts), cross-entropy,
Adam. Before each run the feature cache is reset to the warmed training set, so both pay the same
encoder passes for attacked texts. An untimed warm-up round first (WordNet and the synonym caches
load once per process), then runs interleaved; CPU-time medians (process CPU seconds, one
torch thread: far less sensitive to other load than wall time) and the weights agreement printed.
Target (issue 18): <= 1.05x.

    .venv/bin/python benchmarks/text_training_step.py [--n 256] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.registry import attacks, datasets, models, trainers
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.loop import LoopConfig, fit

ATTACK = {"max_candidates": 8, "max_queries": 20, "min_similarity": 0.0}


def bare(clf: Any, data: Any, trainer: Any, epochs: int, seed: int) -> None:
    """The bare loop: the same batches, forward, attack and Adam steps, nothing else."""
    opt = torch.optim.Adam(clf.module.parameters(), lr=trainer.lr)
    atk = attacks.create("textfooler", ATTACK) if trainer.registered_name == "text-at" else None
    bs = trainer.batch_size
    for epoch in range(1, epochs + 1):
        g = torch.Generator().manual_seed(seed_from("perm", seed, epoch))
        perm = torch.randperm(len(data), generator=g)
        for i in range(0, len(data), bs):
            idx = perm[i : i + bs]
            xb, yb = [data.x[j] for j in idx.tolist()], data.y[idx]
            adv: list[str] = []
            y_adv = yb[:0]
            if atk is not None:
                m = math.ceil(trainer.adv_fraction * len(xb))
                rng = ExampleRNG.from_seed(f"train|{seed}|{epoch}", data.ids[idx])
                clf.module.eval()
                with torch.no_grad():
                    r = atk(clf, xb[:m], yb[:m], trainer.budget, rng=rng.take(torch.arange(m)))
                ok = [k for k in range(m) if bool(r.success[k]) and r.x_adv[k] != xb[k]]
                adv, y_adv = [r.x_adv[k] for k in ok], yb[torch.tensor(ok, dtype=torch.long)]
            clf.module.train()
            loss = F.cross_entropy(clf.logits(xb + adv), torch.cat([yb, y_adv]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def robustlab_fit(clf: Any, data: Any, trainer: Any, epochs: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = TrainingFolder({"bench": time.time_ns()}, root=Path(tmp))
        fit(clf, data, None, trainer, LoopConfig(epochs=epochs, seed=seed), folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--words", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dp = {"limit": args.n, "max_words": args.words}
    data = datasets.create("bbc-news", {"split": "train", **dp})
    cases = [
        ("minilm-mlp", "standard", {"lr": 3e-3}),
        ("minilm-mvp", "standard", {"lr": 1e-2}),
        ("minilm-mlp", "text-at", {"lr": 3e-3, "attack_params": ATTACK, "budget": 0.2}),
        ("minilm-mvp", "text-at", {"lr": 1e-2, "attack_params": ATTACK, "budget": 0.2}),
    ]
    print(f"BBC train {len(data)} texts x {args.words} words, batch {args.batch}, "
          f"{args.epochs} epoch(s), {args.threads} thread(s); CPU seconds, medians of "
          f"{args.repeats}")  # fmt: skip
    for base, tname, tp in cases:
        clf0 = models.create(base, {"data_params": dp})
        warm = copy.copy(clf0.features._cache)
        times: dict[str, list[float]] = {"robustlab": [], "bare": []}
        nets: dict[str, Any] = {}
        for rep in range(args.repeats + 1):  # rep 0: an untimed warm-up (WordNet, lexicon caches)
            for which in ("bare", "robustlab") if rep % 2 else ("robustlab", "bare"):
                clf = copy.deepcopy(clf0)
                clf.features._cache = copy.copy(warm)  # the same encoder passes for both
                trainer = trainers.create(tname, {**tp, "batch_size": args.batch})
                run = robustlab_fit if which == "robustlab" else bare
                t = time.process_time()
                run(clf, data, trainer, args.epochs, 0)
                if rep:
                    times[which].append(time.process_time() - t)
                nets[which] = clf.module.state_dict()
        diff = max(float((a - b).abs().max()) for a, b in
                   zip(nets["robustlab"].values(), nets["bare"].values(), strict=True))  # fmt: skip
        r, b = statistics.median(times["robustlab"]), statistics.median(times["bare"])
        print(f"{base:11s} {tname:9s} robustlab {r:7.2f} s  bare {b:7.2f} s  ratio {r / b:.3f}x  "
              f"max |weight diff| {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
