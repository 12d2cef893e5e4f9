"""Gradient-attack speed vs the physical limit and vs torchattacks, Foolbox and ART, side by side.

The limit of a K-step gradient attack is K forward + input-gradient passes in a bare loop on the
network as given. For FGSM, PGD-10 and APGD-100 at batch 1, 32 and 256 this prints ``time / limit``
for robustlab with the network's layout as given (early stop off, so it does the same K passes),
robustlab with its automatic layout (``TorchClassifier(memory_format="auto")``, the default:
channels-last for conv nets on the CPU) and each installed peer (Foolbox has no APGD), on a small
BatchNorm CNN (1x28x28) and a ~1M-parameter ResNet-style model (3x32x32); then the throughput of
PGD-10 with per-example early stop vs torchattacks' PGD-10 on the trained digits CNN (same robust
accuracy expected). robustlab's final success check is deferred until ``success`` is read (the
runner reads it off its own evaluation), so like the peers' it is not in the timed call.

    .venv/bin/python benchmarks/attacks_vs_peers.py [--quick] [--threads 1]
    .venv/bin/python benchmarks/attacks_vs_peers.py --only resnet --batches 256 \
        --peers torchattacks,foolbox --no-early-stop   # one row set; ART's APGD there takes ~25 min
    .venv/bin/python benchmarks/attacks_vs_peers.py --only resnet --batches 32,256 \
        --peers torchattacks --no-early-stop --attacks PGD-10,APGD-100   # issue 22's two rows

Timings are the best of ``--reps`` interleaved runs, in process CPU time by default (the
process uses one thread, so this is robust to other load on a shared machine; ``--wall`` for
wall-clock) (weights random for the fixed-step rows: the cost of a
fixed-step attack does not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from collections.abc import Callable
from functools import partial

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
DEVICE = torch.device("cpu")


def best_time(
    fn: Callable[..., object], reps: int, *args: object, inner: int = 1, **kw: object
) -> float:
    """Best of ``reps`` timings of ``inner`` back-to-back calls, per call."""
    out = []
    for _ in range(reps):
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        t = CLOCK()
        for _ in range(inner):
            fn(*args, **kw)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        out.append((CLOCK() - t) / inner)
    return min(out)


MIN_TIME = 0.05  # seconds per timing: sub-ms calls (batch 1) are repeated back to back


def limit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    for _ in range(k):
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(net(xg), y), xg)


def peers(net: nn.Module, shape: tuple[int, ...], b: int, ta, fb, art) -> dict:  # type: ignore[no-untyped-def]
    """The peers' FGSM / PGD-10 / APGD-100 as callables ``f(x, y)`` (None where a peer lacks one)."""
    out: dict[str, dict[str, Callable | None]] = {"FGSM": {}, "PGD-10": {}, "APGD-100": {}}
    if ta:
        out["FGSM"]["torchattacks"] = ta.FGSM(net, eps=EPS)
        out["PGD-10"]["torchattacks"] = ta.PGD(net, eps=EPS, alpha=EPS / 4, steps=10)
        out["APGD-100"]["torchattacks"] = ta.APGD(net, eps=EPS, steps=100)
    if fb:
        fm = fb.PyTorchModel(net, bounds=(0, 1))
        fgsm, pgd = fb.attacks.FGSM(), fb.attacks.LinfPGD(steps=10, abs_stepsize=EPS / 4)
        out["FGSM"]["foolbox"] = lambda x, y: fgsm(fm, x, y, epsilons=EPS)
        out["PGD-10"]["foolbox"] = lambda x, y: pgd(fm, x, y, epsilons=EPS)
    if art:
        import numpy as np
        from art.attacks.evasion import (
            AutoProjectedGradientDescent,
            FastGradientMethod,
            ProjectedGradientDescentPyTorch,
        )
        from art.estimators.classification import PyTorchClassifier as ArtClassifier

        est = ArtClassifier(net, nn.CrossEntropyLoss(), shape, 10, clip_values=(0.0, 1.0))
        kw = {"eps": EPS, "batch_size": b}
        a_fgsm = FastGradientMethod(est, **kw)
        a_pgd = ProjectedGradientDescentPyTorch(est, eps_step=EPS / 4, max_iter=10, verbose=False,
                                                num_random_init=1, **kw)  # fmt: skip
        a_apgd = AutoProjectedGradientDescent(est, eps_step=2 * EPS, max_iter=100, verbose=False,
                                              loss_type="cross_entropy", **kw)  # fmt: skip
        for what, a in (("FGSM", a_fgsm), ("PGD-10", a_pgd), ("APGD-100", a_apgd)):
            out[what]["ART"] = partial(_art_generate, a, np)
    return out


def _art_generate(attack, np, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    return attack.generate(x.numpy(), y.numpy().astype(np.int64))


WHICH = ("FGSM", "PGD-10", "APGD-100")  # the attacks timed (--attacks)


def row(
    name: str, net: nn.Module, shape: tuple[int, ...], batches: list[int], reps: int, ta, fb, art
) -> None:  # type: ignore[no-untyped-def]
    """One line per attack and batch size: robustlab with the module as given (the limit's own
    layout), robustlab with its automatic layout (``memory_format="auto"``: channels-last for
    conv nets on the CPU, on a copy of the net), and each installed peer, all as time / limit."""
    net = net.to(DEVICE)
    given = TorchClassifier(net.eval(), 10, Domain(0.0, 1.0, shape), memory_format="contiguous")
    auto = TorchClassifier(copy.deepcopy(net).eval(), 10, Domain(0.0, 1.0, shape))
    th = ThreatModel("inf", EPS)
    specs = {
        "FGSM": (1, attacks.create("fgsm")),
        "PGD-10": (10, attacks.create("pgd", {"steps": 10, "early_stop": False})),
        "APGD-100": (101, attacks.create("apgd", {"steps": 100, "early_stop": False})),
    }
    for b in batches:
        g = torch.Generator().manual_seed(b)
        x = torch.rand(b, *shape, generator=g).to(DEVICE)
        with torch.no_grad():  # labels = predictions: peers skip examples already misclassified
            y = net(x).argmax(1)
        rng = ExampleRNG.from_seed(0, torch.arange(b))
        theirs = peers(net, shape, b, ta, fb, art)
        for what, (k, ours) in specs.items():
            if what not in WHICH:
                continue
            # interleaved rounds: load on the shared machine hits everyone alike; best of reps
            t: dict[str, float] = {}
            runs = {"limit": partial(limit, net, x, y, k),
                    "robustlab": partial(ours, given, x, y, th, rng=rng),
                    "robustlab auto": partial(ours, auto, x, y, th, rng=rng)}  # fmt: skip
            runs.update({p: partial(f, x, y) for p, f in theirs[what].items()})
            # one timing covers >= MIN_TIME: a single ~1 ms call (batch 1) varied by +-25 % alone
            inner = max(1, math.ceil(MIN_TIME / best_time(runs["limit"], 2)))
            for _ in range(reps):
                for key, fn in runs.items():
                    t[key] = min(t.get(key, float("inf")), best_time(fn, 1, inner=inner))
            lim = t.pop("limit")
            cols = "  ".join(f"{key} {v / lim:5.2f}x" for key, v in t.items())
            fastest_peer = min((v for key, v in t.items() if not key.startswith("robustlab")),
                               default=float("nan"))  # fmt: skip
            print(f"{name:9s} {what:9s} batch {b:4d}  limit {lim * 1e3:9.1f} ms  {cols}  "
                  f"auto speed-up over fastest peer {fastest_peer / t['robustlab auto']:5.2f}x",
                  flush=True)  # fmt: skip


def early_stop(ta, reps: int) -> None:  # type: ignore[no-untyped-def]
    """PGD-10 throughput with per-example early stop on the trained digits CNN vs torchattacks'
    PGD-10 on the same network as the user holds it (standard layout); robustlab both with its
    automatic layout (the default) and with the layout as given (early stop alone)."""
    auto = models.create("digits-cnn")  # memory_format="auto": channels-last on the CPU
    net = copy.deepcopy(auto.module).to(DEVICE, memory_format=torch.contiguous_format)
    given = TorchClassifier(net, 10, auto.domain, memory_format="contiguous")
    if DEVICE.type != "cpu":
        auto = TorchClassifier(auto.module.to(DEVICE), 10, auto.domain)
    d = datasets.get("digits")(split="test")
    x, y = d.x.to(DEVICE), d.y.to(DEVICE)
    rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
    for eps in (0.1, 0.2):
        th = ThreatModel("inf", eps)
        pgd = attacks.create("pgd", {"steps": 10, "step_size": 0.25})
        atk = ta.PGD(net, eps=eps, alpha=eps / 4, steps=10)
        t_auto = t_given = t_ta = float("inf")
        for _ in range(reps):
            t_auto = min(t_auto, best_time(pgd, 1, auto, x, y, th, rng=rng))
            t_given = min(t_given, best_time(pgd, 1, given, x, y, th, rng=rng))
            t_ta = min(t_ta, best_time(atk, 1, x, y))
        res = pgd(auto, x, y, th, rng=rng)
        x_ta = atk(x, y)
        with torch.no_grad():
            acc_ta = (given.logits(x_ta).argmax(1) == y).float().mean()
        print(f"early stop, digits-cnn, {len(x)} examples, PGD-10 Linf {eps}: robustlab "
              f"{len(x) / t_auto:6.0f} ex/s (robust acc {1 - res.success.float().mean():.3f}; "
              f"{len(x) / t_given:6.0f} ex/s with the layout as given)  torchattacks "
              f"{len(x) / t_ta:6.0f} ex/s (robust acc {acc_ta:.3f})  speed-up {t_ta / t_auto:.2f}x "
              f"({t_ta / t_given:.2f}x from early stop alone)", flush=True)  # fmt: skip


def _optional(name: str):  # type: ignore[no-untyped-def]
    try:
        return __import__(name)
    except ImportError:
        print(f"({name} not installed: its column is skipped)")
        return None


def main() -> None:
    global WHICH
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="batch 1 and 32 only, 2 reps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="wall-clock instead of process CPU time")
    ap.add_argument("--resnet-batches", default="1,32,256")
    ap.add_argument("--batches", default="", help="batch sizes (default 1,32,256)")
    ap.add_argument("--device", default="cpu", help="e.g. cuda (then wall-clock time)")
    ap.add_argument("--peers", default="torchattacks,foolbox,art", help="peers to run")
    ap.add_argument("--only", choices=["smallcnn", "resnet"], help="one model only")
    ap.add_argument("--no-early-stop", action="store_true", help="skip the early-stop row")
    ap.add_argument("--attacks", default=",".join(WHICH), help="e.g. PGD-10,APGD-100")
    a = ap.parse_args()
    global CLOCK, DEVICE
    WHICH = tuple(a.attacks.split(","))
    DEVICE = torch.device(a.device)
    if a.wall or DEVICE.type != "cpu":
        CLOCK = time.perf_counter
    torch.set_num_threads(a.threads)
    wanted = set(a.peers.split(","))
    ta, fb, art = (
        _optional(p) if p in wanted else None for p in ("torchattacks", "foolbox", "art")
    )
    torch.manual_seed(0)
    batches = [1, 32] if a.quick else [1, 32, 256]
    if a.batches:
        batches = [int(b) for b in a.batches.split(",")]
    reps = 2 if a.quick else a.reps
    clock = "wall" if CLOCK is time.perf_counter else "process CPU"
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"{a.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, {clock} time; ratios: time / limit; load average "
          f"{os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M %Z')}")  # fmt: skip
    if ta and not a.no_early_stop:
        early_stop(ta, reps)
    if a.only != "resnet":
        row("smallcnn", SmallCNN(1, 10, 28, 16), (1, 28, 28), batches, reps, ta, fb, art)
    if a.only == "smallcnn":
        return
    net = resnet_small()
    print(f"resnet: {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters")
    rb = (
        [int(b) for b in a.resnet_batches.split(",") if int(b) in batches]
        if not a.batches
        else batches
    )
    row("resnet1M", net, (3, 32, 32), rb, reps, ta, fb, art)


if __name__ == "__main__":
    main()
