"""PGD-AT epoch time: robustlab's training loop vs the bare loop (the physical limit), side by side.

The bare loop is PGD adversarial training written directly in torch: per batch, a uniform random
start in the Linf ball, K steps of ``x + alpha sign(grad)`` clamped to the ball and [0, 1], then one
training forward/backward and an Adam step -- K + 1 passes, nothing else. robustlab's epoch is
``robustlab.training.loop.fit`` with the ``pgd-at`` trainer (the attack core's PGD, per-example
random streams, input-domain checks, eval/train switches, the per-epoch checkpoint write), without
the held-out evaluation (``--holdout`` adds it, as a separate number). Same model, initial weights,
data, batch size, steps and memory layout; runs interleaved, medians reported. Target (issue 17):
<= 1.05x at batch 128.

    .venv/bin/python benchmarks/train_pgd_at.py [--n 4096] [--steps 7] [--repeats 5] [--threads 1]
        [--device cpu|cuda] [--width 16]

On a busy CPU use ``--threads 1`` and read the CPU-time ratio (process CPU seconds), which is far
less sensitive to other load than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlab.core.registry import datasets, trainers
from robustlab.core.types import Domain
from robustlab.models.nets import SmallCNN
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.training.checkpoint import TrainingFolder
from robustlab.training.loop import LoopConfig, fit


def bare_epoch(net, x, y, eps, steps, alpha, bs, seed) -> None:  # type: ignore[no-untyped-def]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator(device=x.device).manual_seed(seed)
    perm = torch.randperm(len(x), device=x.device, generator=g)
    for i in range(0, len(x), bs):
        idx = perm[i : i + bs]
        xb, yb = x[idx], y[idx]
        lo, hi = (xb - eps).clamp_min(0), (xb + eps).clamp_max(1)
        net.eval()
        cur = (xb + (2 * torch.rand(xb.shape, device=x.device, generator=g) - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            cur.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(net(cur), yb, reduction="sum"), cur)
            cur = (cur.detach() + alpha * grad.sign()).clamp_(lo, hi)
        net.train()
        loss = F.cross_entropy(net(cur), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--holdout", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    data = datasets.create("fashion-mnist", {"split": "train", "limit": args.n + args.holdout})
    train, hold = data.take(range(args.n)), None
    if args.holdout:
        hold = data.take(range(args.n, args.n + args.holdout))
    trainer = trainers.create("pgd-at", {"eps": args.eps, "steps": args.steps, "lr": 1e-3,
                                         "batch_size": args.batch})  # fmt: skip
    alpha = max(2.5 / args.steps, 0.25) * args.eps  # PGD's default step, as the trainer uses

    torch.manual_seed(0)
    init = SmallCNN(1, 10, 28, args.width)
    probe = TorchClassifier(SmallCNN(1, 10, 28, args.width), 10, Domain(0, 1, (1, 28, 28)),
                            device=dev)  # fmt: skip
    layout = probe.memory_format
    x, y = train.x.to(dev), train.y.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def fresh() -> torch.nn.Module:
        net = SmallCNN(1, 10, 28, args.width)
        net.load_state_dict(init.state_dict())
        return net.to(dev).to(memory_format=layout)

    def run_bare() -> tuple[float, float]:
        net = fresh()
        sync()
        w, c = time.perf_counter(), time.process_time()
        bare_epoch(net, x.to(memory_format=layout), y, args.eps, args.steps, alpha, args.batch, 0)
        sync()
        return time.perf_counter() - w, time.process_time() - c

    def run_lab(holdout: object) -> tuple[float, float]:
        clf = TorchClassifier(fresh(), 10, Domain(0, 1, (1, 28, 28)), device=dev)
        cfg = LoopConfig(epochs=1, seed=0, eval_eps=args.eps if holdout is not None else None)
        with tempfile.TemporaryDirectory() as tmp:
            folder = TrainingFolder({"bench": 1}, root=Path(tmp))
            sync()
            w, c = time.perf_counter(), time.process_time()
            fit(clf, train, holdout, trainer, cfg, folder)  # type: ignore[arg-type]
            sync()
            return time.perf_counter() - w, time.process_time() - c

    run_bare(), run_lab(None)  # warm-up (allocator, oneDNN/cuDNN plans)
    rows: dict[str, list[tuple[float, float]]] = {
        "bare": [],
        "robustlab": [],
        "robustlab+holdout": [],
    }
    for _ in range(args.repeats):
        rows["bare"].append(run_bare())
        rows["robustlab"].append(run_lab(None))
        if hold is not None:
            rows["robustlab+holdout"].append(run_lab(hold))
    print(f"PGD-AT epoch: {args.n} Fashion-MNIST images, batch {args.batch}, {args.steps} steps, "
          f"SmallCNN width {args.width}, {dev}, layout {layout}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved")  # fmt: skip
    base_w = statistics.median(r[0] for r in rows["bare"])
    base_c = statistics.median(r[1] for r in rows["bare"])
    for name, rs in rows.items():
        if not rs:
            continue
        w, c = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        print(
            f"  {name:18s} wall {w:7.3f} s ({w / base_w:.3f}x)   cpu {c:7.3f} s ({c / base_c:.3f}x)"
        )


if __name__ == "__main__":
    main()
