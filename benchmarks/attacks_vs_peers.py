"""Gradient-attack speed vs the physical limit and vs torchattacks, measured side by side.

The limit of a K-step gradient attack is K forward + input-gradient passes in a bare loop. For
FGSM, PGD-10 and APGD-100 at batch 1, 32 and 256 this prints ``time / limit`` for robustlab (early
stop off, so both do the same K passes) and torchattacks, on a small BatchNorm CNN (1x28x28) and a
~1M-parameter ResNet-style model (3x32x32); then the throughput of PGD-10 with per-example early
stop vs torchattacks' PGD-10 on the trained digits CNN (same robust accuracy expected).

    .venv/bin/python benchmarks/attacks_vs_peers.py [--quick] [--threads 1]

Timings are the best of ``--reps`` interleaved runs, in process CPU time by default (the
process uses one thread, so this is robust to other load on a shared machine; ``--wall`` for
wall-clock) (weights random for the fixed-step rows: the cost of a
fixed-step attack does not depend on them).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.models import TorchClassifier
from robustlab.models.nets import SmallCNN

EPS = 8 / 255


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())  # fmt: skip

    def forward(self, x):  # type: ignore[no-untyped-def]
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))


def resnet_small(w: int = 40) -> nn.Module:
    """A ResNet-style net with ~1M parameters for 3x32x32 inputs."""
    return nn.Sequential(
        nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10),
    )  # fmt: skip


CLOCK = time.process_time  # CPU time of this (1-thread) process: robust to a loaded machine


def best_time(fn: Callable[..., object], reps: int, *args: object, **kw: object) -> float:
    out = []
    for _ in range(reps):
        t = CLOCK()
        fn(*args, **kw)
        out.append(CLOCK() - t)
    return min(out)


def limit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    for _ in range(k):
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(net(xg), y), xg)


def row(
    name: str, net: nn.Module, shape: tuple[int, ...], batches: list[int], reps: int, ta
) -> None:  # type: ignore[no-untyped-def]
    clf = TorchClassifier(net.eval(), 10, Domain(0.0, 1.0, shape))
    th = ThreatModel("inf", EPS)
    specs = {
        "FGSM": (1, attacks.create("fgsm"), lambda: ta.FGSM(net, eps=EPS)),
        "PGD-10": (10, attacks.create("pgd", {"steps": 10, "early_stop": False}),
                   lambda: ta.PGD(net, eps=EPS, alpha=EPS / 4, steps=10)),
        "APGD-100": (101, attacks.create("apgd", {"steps": 100, "early_stop": False}),
                     lambda: ta.APGD(net, eps=EPS, steps=100)),
    }  # fmt: skip
    for b in batches:
        g = torch.Generator().manual_seed(b)
        x = torch.rand(b, *shape, generator=g)
        with torch.no_grad():  # labels = predictions: peers skip examples already misclassified
            y = net(x).argmax(1)
        rng = ExampleRNG.from_seed(0, torch.arange(b))
        for what, (k, ours, theirs) in specs.items():
            atk = theirs() if ta else None
            # interleaved rounds: load on the shared machine hits all three alike; best of reps
            t_lim = t_ours = t_ta = float("inf")
            for _ in range(reps):
                t_lim = min(t_lim, best_time(limit, 1, net, x, y, k))
                t_ours = min(t_ours, best_time(ours, 1, clf, x, y, th, rng=rng))
                t_ta = min(t_ta, best_time(atk, 1, x, y) if atk else float("nan"))
            print(f"{name:9s} {what:9s} batch {b:4d}  limit {t_lim * 1e3:9.1f} ms   robustlab "
                  f"{t_ours / t_lim:5.2f}x   torchattacks {t_ta / t_lim:5.2f}x   "
                  f"robustlab/torchattacks {t_ours / t_ta:5.2f}", flush=True)  # fmt: skip


def early_stop(ta, reps: int) -> None:  # type: ignore[no-untyped-def]
    clf = models.create("digits-cnn")
    d = datasets.get("digits")(split="test")
    x, y = d.x, d.y
    rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
    for eps in (0.1, 0.2):
        th = ThreatModel("inf", eps)
        pgd = attacks.create("pgd", {"steps": 10, "step_size": 0.25})
        atk = ta.PGD(clf.module, eps=eps, alpha=eps / 4, steps=10)
        t_ours = t_ta = float("inf")
        for _ in range(reps):
            t_ours = min(t_ours, best_time(pgd, 1, clf, x, y, th, rng=rng))
            t_ta = min(t_ta, best_time(atk, 1, x, y))
        res = pgd(clf, x, y, th, rng=rng)
        x_ta = atk(x, y)
        with torch.no_grad():
            acc_ta = (clf.logits(x_ta).argmax(1) == y).float().mean()
        print(f"early stop, digits-cnn, {len(x)} examples, PGD-10 Linf {eps}: robustlab "
              f"{len(x) / t_ours:7.0f} ex/s (robust acc {1 - res.success.float().mean():.3f})  "
              f"torchattacks {len(x) / t_ta:7.0f} ex/s (robust acc {acc_ta:.3f})  "
              f"speed-up {t_ta / t_ours:.2f}x", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="batch 1 and 32 only, 2 reps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="wall-clock instead of process CPU time")
    ap.add_argument("--resnet-batches", default="1,32,256")
    a = ap.parse_args()
    global CLOCK
    if a.wall:
        CLOCK = time.perf_counter
    torch.set_num_threads(a.threads)
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
    torch.manual_seed(0)
    batches = [1, 32] if a.quick else [1, 32, 256]
    reps = 2 if a.quick else a.reps
    clock = "wall" if a.wall else "process CPU"
    print(f"torch {torch.__version__}, {a.threads} thread(s), {clock} time; ratios: time / limit")
    early_stop(ta, reps)
    row("smallcnn", SmallCNN(1, 10, 28, 16), (1, 28, 28), batches, reps, ta)
    net = resnet_small()
    print(f"resnet: {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters")
    rb = [int(b) for b in a.resnet_batches.split(",") if int(b) in batches]
    row("resnet1M", net, (3, 32, 32), rb, reps, ta)


if __name__ == "__main__":
    main()
