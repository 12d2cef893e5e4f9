"""ContraBERT training time: robustlab's loop with the ``contrabert`` trainer vs a bare loop.

The bare loop is the same objective written directly with torch + transformers: per batch,
tokenise the queries, functions and function variants, three forward passes of the encoder
(mean pooling, L2 normalisation), three InfoNCE terms with in-batch negatives, backward, an Adam
step on the same parameters (the last ``--train-layers`` layers), the frozen layers in eval mode
as the loop keeps them. It gets the *same text batches* robustlab draws (built before timing from
the trainer's variant pools, the loop's permutation and per-example streams). robustlab's epoch
is ``robustlab.training.loop.fit`` (``setup`` building the pools, per-batch variant draws,
``train_mode``, the per-epoch checkpoint write). Same model (all-MiniLM-L6-v2 via
``tunable-encoder``), initial weights, batches, optimizer and lr; runs interleaved, medians of CPU
time (process CPU seconds: robust to other load on a shared machine) at one torch thread.

Printed: the epoch ratio (robustlab fit / bare) and the steps ratio: ``fit`` with a trainer whose
variant pools are already built (``setup`` then only turns on gradients; the pools are built once
per training, not per step, and their cost is printed separately). Target (issue 18): <= 1.05x.

    .venv/bin/python benchmarks/contrabert_step.py [--problems 100] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.registry import datasets, models, trainers
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.loop import LoopConfig, fit


def batches(trainer: Any, data: Any, seed: int, bs: int) -> list[tuple[list[str], ...]]:
    """The (queries, functions, variants) text batches of epoch 1, as the loop draws them."""
    n = len(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_from("perm", seed, 1)))
    out = []
    for i in range(0, n, bs):
        idx = perm[i : i + bs]
        rng = ExampleRNG.from_seed(f"train|{seed}|1", data.ids[idx])
        u = rng.uniform(3)
        nl = trainer._nl.pick(idx, u[:, 2])
        q = [nl[j] if u[j, 1] < trainer.nl_rate else trainer._queries[k]
             for j, k in enumerate(idx.tolist())]  # fmt: skip
        c = [trainer._functions[k] for k in idx.tolist()]
        out.append((q, c, trainer._pl.pick(idx, u[:, 0])))
    return out


def bare_epoch(enc: Any, layers: int, texts: list[tuple[list[str], ...]], lr: float,
               tau: float) -> None:  # fmt: skip
    net, tok = enc.net, enc.tokenizer
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for layer in net.encoder.layer[-layers:] for p in layer.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)

    def emb(t: list[str]) -> torch.Tensor:
        e = tok(t, padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt")
        h = net(input_ids=e["input_ids"], attention_mask=e["attention_mask"]).last_hidden_state
        m = e["attention_mask"].unsqueeze(-1).to(h.dtype)
        return F.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)

    net.eval()
    for layer in net.encoder.layer[-layers:]:
        layer.train()
    for q, c, a in texts:
        eq, ec, ea = emb(q), emb(c), emb(a)
        target = torch.arange(len(q))
        loss = (F.cross_entropy(eq @ ec.T / tau, target) + F.cross_entropy(eq @ ea.T / tau, target)
                + F.cross_entropy(ec @ ea.T / tau, target))  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=100, help="training problems (of 100)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-layers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = {"train_layers": args.train_layers, "lr": 5e-5, "batch_size": 16}
    data = datasets.create("humaneval-pairs", {}).take(range(args.problems))
    base = models.create("tunable-encoder")
    state = copy.deepcopy(base.module.state_dict())
    probe = trainers.create("contrabert", params)
    probe.setup(copy.deepcopy(base), data)  # cold: first WordNet / registry loads
    t0 = time.process_time()
    probe.setup(copy.deepcopy(base), data)
    setup_cpu = time.process_time() - t0  # warm, as inside a training
    texts = batches(probe, data, 0, probe.batch_size)
    pools = {k: getattr(probe, k) for k in ("_pl", "_nl", "_queries", "_functions")}

    def prebuilt() -> Any:
        t = trainers.create("contrabert", params)
        t.setup = lambda clf, train: [p.requires_grad_(True) for p in t.trainable(clf)]
        t.__dict__.update(pools)
        return t

    names = ["robustlab", "robustlab-steps", "bare"]
    times: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in names[r % 3 :] + names[: r % 3]:
                base.module.load_state_dict(state)
                clf = copy.deepcopy(base)
                t = time.process_time()
                if name == "bare":
                    bare_epoch(clf, args.train_layers, texts, probe.lr, probe.temperature)
                else:
                    folder = TrainingFolder({"bench": uuid.uuid4().hex}, root=Path(tmp))
                    trainer = (
                        trainers.create("contrabert", params) if name == "robustlab" else prebuilt()
                    )
                    fit(clf, data, None, trainer, LoopConfig(epochs=1, seed=0), folder)
                times[name].append(time.process_time() - t)
                print(f"  run {r} {name}: {times[name][-1]:.2f} s CPU", flush=True)
    rl, steps, bare = (statistics.median(times[n]) for n in names)
    print(f"problems {args.problems}, batches {len(texts)} of {probe.batch_size}, last "
          f"{args.train_layers} layers, {args.threads} thread(s), medians of {args.repeats}")  # fmt: skip
    print(f"robustlab fit epoch {rl:.2f} s CPU, with pools prebuilt {steps:.2f} s, bare loop "
          f"{bare:.2f} s CPU; building the pools (setup, warm) {setup_cpu:.2f} s CPU")  # fmt: skip
    print(
        f"ratio robustlab / bare: epoch incl. setup {rl / bare:.3f}x, "
        f"steps (pools prebuilt) {steps / bare:.3f}x  (target <= 1.05x)"
    )


if __name__ == "__main__":
    main()
