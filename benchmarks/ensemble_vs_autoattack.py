"""robustlab's ``autoattack`` ensemble vs ``torchattacks.AutoAttack`` (version "standard"), side by
side in one process on the same inputs: robust accuracy of both and, per example, how many images
torchattacks broke that stayed robust for us (``only ta``: must be 0 -- equal or better strength,
flagged WEAKER otherwise) and the reverse (``only ours``); wall time and process CPU time of both
(median of ``--reps`` interleaved runs: ours, theirs, ours, ...) and the ratios ours / theirs
(flagged SLOWER where our CPU time is not below theirs). Load average and threads are printed.

Models are trained locally (no downloads): the registry's ``digits-cnn`` (8x8 scikit-learn digits,
BatchNorm CNN) and a BatchNorm ``SmallCNN`` trained on 10,000 Fashion-MNIST training images (2
epochs, cached on disk; skipped when Debian's ``dataset-fashion-mnist`` is not installed). One
torch thread.

    .venv/bin/python benchmarks/ensemble_vs_autoattack.py   # 296 s CPU, 333 s wall at load 3
    .venv/bin/python benchmarks/ensemble_vs_autoattack.py --peer-budget standard   # ~225 s CPU
    .venv/bin/python benchmarks/ensemble_vs_autoattack.py --n 300 --n-fashion 200 --reps 3 --members
    .venv/bin/python benchmarks/ensemble_vs_autoattack.py --only fashion --eps 0.05 --members

``--members`` also times each member of both ensembles alone on the examples it receives inside
its ensemble (where the time goes). torchattacks' "standard" AutoAttack runs APGD-CE, APGD-T (9
targets) and FAB-T with its default of 10 steps each, and Square with 5,000 queries: torchattacks
3.5.1's ``AutoAttack.__init__`` builds ``APGD(..., loss="ce", n_restarts=1)``,
``APGDT(..., n_classes=n_classes, n_restarts=1)``, ``FAB(..., multi_targeted=True,
n_classes=n_classes, n_restarts=1)`` and ``Square(..., n_queries=5000, n_restarts=1)`` without a
``steps`` argument, and ``APGD``, ``APGDT`` and ``FAB`` default to ``steps=10``. The paper's
AutoAttack (fra31/auto-attack, ``version="standard"``) runs 100 iterations of each (its
``APGDAttack``, ``APGDAttack_targeted`` and ``FABAttack_PT`` default to ``n_iter=100``; 9 target
classes for APGD-T and FAB-T). So we compare with two torchattacks peers (``--peer-budget``,
default both):

- ``ta``: ``torchattacks.AutoAttack(norm="Linf", version="standard", n_classes=10, seed=0)``;
- ``ta@100`` (``paper``): the same ``MultiAttack`` built from torchattacks' own classes exactly as
  its ``AutoAttack`` composes them (same order, eps, norm, seed 0, ``n_restarts=1``, ``loss="ce"``,
  ``n_classes=10``, ``multi_targeted=True``, Square 5,000 queries) except ``steps=100`` for
  ``APGD``, ``APGDT`` and ``FAB``: the paper's budget, the one our default ``standard`` runs
  (which has no FAB-T). It runs in the first ``--paper-reps`` (default 1) of the ``--reps``
  interleaved repeats only, and by default on the Fashion-MNIST setups only (``--paper-on all``
  for every setup): it costs 2-3x torchattacks' AutoAttack.

Our rows (``--variants``, default ``ours``):

- ``ours``: ``autoattack`` as configured by default (``version="standard"``: AutoAttack's own
  budget, 100 steps for APGD-CE and APGD-T with 9 targets, 5,000 Square queries; no FAB);
- ``fast``: ``autoattack`` with ``version="fast"`` (APGD-CE 50 steps, APGD-T 9 targets x 30
  steps, Square 5,000 queries);
- ``ours@10``: our ensemble at torchattacks' budget (10 steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel


def fashion_cnn() -> Any:
    """A BatchNorm SmallCNN on 10,000 Fashion-MNIST training images (2 epochs), cached."""
    from robustlab.models import TorchClassifier
    from robustlab.models.nets import SmallCNN
    from robustlab.models.training import cached_module, train_classifier

    make = partial(SmallCNN, 1, 10, 28, 16)
    train = partial(
        train_classifier,
        make,
        datasets.get("fashion-mnist")(split="train", limit=10000),
        seed=0,
        epochs=2,
    )
    key = {"name": "fashion-cnn-bench", "seed": 0, "epochs": 2, "limit": 10000, "v": 1}
    net = cached_module(key, make, train)
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 28, 28)), name="fashion-cnn")


def setups(
    only: str | None, n: int, n_fashion: int, eps: list[float] | None
) -> list[tuple[str, Any, Any, Any, float]]:
    out = []
    if only in (None, "digits"):
        d = datasets.get("digits")(split="test")
        clf = models.create("digits-cnn")
        for e in eps or [0.05, 0.1]:
            out.append((f"digits-cnn eps={e:.3g}", clf, d.x[:n], d.y[:n], e))
    if only in (None, "fashion"):
        try:
            d = datasets.get("fashion-mnist")(split="test", limit=n_fashion)
            clf = fashion_cnn()
        except ConfigError as err:
            print(f"(fashion-mnist skipped: {err})")
        else:
            for e in eps or [8 / 255, 0.05]:
                out.append((f"fashion-cnn eps={e:.3g}", clf, d.x, d.y, e))
    return out


class Net(torch.nn.Module):
    """The adapter's logits as a module for torchattacks (same function; holds the weights so
    torchattacks finds their device)."""

    def __init__(self, clf: Any) -> None:
        super().__init__()
        self.clf, self.module = clf, clf.module

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.clf.logits(z)


def still_right(clf: Any, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: the model still classifies ``x_adv`` correctly (robust)."""
    with torch.no_grad():
        return clf.logits(x_adv).argmax(1) == y


def robust_acc(clf: Any, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    return float(still_right(clf, x_adv, y).float().mean())


def timed(fn: Any) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def member_times(
    clf: Any, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, params: dict[str, Any]
) -> str:
    """Each member alone (CPU s) on the examples the ensemble hands it, in order."""
    ens = attacks.create("autoattack", params)
    rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
    with torch.no_grad():
        todo = torch.nonzero(clf.logits(x).argmax(1) == y).flatten()
    parts = []
    for name, atk in ens.members():
        if todo.numel() == 0:
            break
        t = time.process_time()
        res = atk(clf, x[todo], y[todo], threat, rng=rng.take(todo).fork(name))
        ok = res.success
        parts.append(f"{name} {time.process_time() - t:.2f}s on {todo.numel()}")
        todo = todo[~ok]
    return ", ".join(parts)


def ta_paper_budget(net: torch.nn.Module, eps: float, n_classes: int = 10, seed: int = 0) -> Any:
    """torchattacks' "standard" AutoAttack composition at the paper's budget: the ``MultiAttack``
    ``torchattacks.AutoAttack(version="standard")`` builds (same classes, order and arguments),
    with ``steps=100`` for APGD, APGD-T and FAB-T instead of their default 10."""
    from torchattacks import APGD, APGDT, FAB, MultiAttack, Square

    kw: dict[str, Any] = {"eps": eps, "norm": "Linf", "seed": seed, "verbose": False}
    return MultiAttack(
        [
            APGD(net, loss="ce", n_restarts=1, steps=100, **kw),
            APGDT(net, n_classes=n_classes, n_restarts=1, steps=100, **kw),
            FAB(net, multi_targeted=True, n_classes=n_classes, n_restarts=1, steps=100, **kw),
            Square(net, n_queries=5000, n_restarts=1, **kw),
        ]
    )


def ta_member_times(multi: Any, clf: Any, x: torch.Tensor, y: torch.Tensor) -> str:
    """torchattacks' members alone (CPU s) on the examples its MultiAttack hands each, in order."""
    fails, parts = torch.arange(len(x)), []
    for atk in multi.attacks:
        if fails.numel() == 0:
            break
        t = time.process_time()
        adv = atk(x[fails], y[fails])
        parts.append(f"{type(atk).__name__} {time.process_time() - t:.2f}s on {fails.numel()}")
        with torch.no_grad():
            fails = fails[clf.logits(adv).argmax(1) == y[fails]]
    return ", ".join(parts)


# our ensemble at torchattacks' "standard" budget (10 APGD steps; no FAB), for an equal-budget row
TA_BUDGET = {
    "attacks": [
        {"name": "apgd", "loss": "ce", "steps": 10},
        {"name": "apgd_t", "loss": "dlr", "steps": 10, "n_targets": 9},
        {"name": "square", "n_queries": 5000},
    ]
}


# our rows: the default ensemble, the "fast" preset, and our members at torchattacks' budget
VARIANTS: dict[str, dict[str, Any]] = {
    "ours": {},
    "fast": {"version": "fast"},
    "ours@10": TA_BUDGET,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="digits test images")
    ap.add_argument("--n-fashion", type=int, default=30, help="Fashion-MNIST test images")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", choices=["digits", "fashion"], default=None)
    ap.add_argument("--eps", type=float, nargs="*", default=None)
    ap.add_argument("--members", action="store_true", help="also time the members one by one")
    ap.add_argument("--no-equal-budget", action="store_true", help="skip the 10-step row")
    ap.add_argument(
        "--peer-budget",
        nargs="*",
        choices=["standard", "paper"],
        default=["standard", "paper"],
        help="torchattacks peers: AutoAttack 'standard' (10 steps) and/or its composition at the "
        "paper's 100 steps",
    )
    ap.add_argument(
        "--paper-reps", type=int, default=1, help="repeats (of --reps) that run the paper peer"
    )
    ap.add_argument(
        "--paper-on",
        choices=["all", "digits", "fashion"],
        default="fashion",
        help="setups the paper peer runs on (default fashion: keeps the default run short)",
    )
    ap.add_argument(
        "--variants", nargs="*", choices=list(VARIANTS), default=["ours"], help="our rows"
    )
    args = ap.parse_args()
    import torchattacks

    torch.set_num_threads(1)
    names = [v for v in args.variants if not (args.no_equal_budget and v == "ours@10")]
    variants = {k: VARIANTS[k] for k in names}
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
        f"{torch.get_num_threads()} thread, median of {args.reps} interleaved runs, "
        f"load average {os.getloadavg()[0]:.2f} at start, {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )
    all_peers = [
        p for p in ("ta", "ta@100") if {"ta": "standard", "ta@100": "paper"}[p] in args.peer_budget
    ]
    print(
        f"{'setup':24} {'ensemble':8} {'peer':6} {'clean':>5} {'robust':>6} {'peer':>6} {'only':>9} "
        f"{'wall s':>7} {'cpu s':>7} {'pe wall':>7} {'pe cpu':>7} {'wall':>6} {'cpu':>6}"
    )
    for name, clf, x, y, eps in setups(args.only, args.n, args.n_fashion, args.eps):
        threat = ThreatModel("inf", eps)
        net = Net(clf).eval()
        paper_here = args.paper_on == "all" or name.startswith(args.paper_on)
        peers = [p for p in all_peers if p == "ta" or paper_here]
        times: dict[str, list[list[float]]] = {k: [[], []] for k in [*variants, *peers]}
        robust: dict[str, torch.Tensor] = {}
        multis: dict[str, Any] = {}
        for rep in range(args.reps):
            for k, params in variants.items():
                rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
                atk = attacks.create("autoattack", params)
                res, w, c = timed(partial(atk, clf, x, y, threat, rng=rng))
                times[k][0].append(w)
                times[k][1].append(c)
                robust[k] = still_right(clf, res.x_adv, y)
                assert torch.equal(robust[k], ~res.success), "success flags differ from the model"
                assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
                assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
            for p in peers:
                if p == "ta@100" and rep >= args.paper_reps:
                    continue
                if p == "ta":
                    ta = torchattacks.AutoAttack(
                        net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0
                    )
                    multis[p] = ta._autoattack
                else:
                    ta = multis[p] = ta_paper_budget(net, eps, n_classes=10, seed=0)
                adv, w, c = timed(partial(ta, x, y))
                adv = adv.detach()
                times[p][0].append(w)
                times[p][1].append(c)
                robust[p] = still_right(clf, adv, y)
                assert float((adv - x).abs().max()) <= eps + 1e-6
        for p in peers:
            tw, tc = (statistics.median(v) for v in times[p])
            rta = float(robust[p].float().mean())
            for k in variants:
                ow, oc = (statistics.median(v) for v in times[k])
                only_ta = int((robust[k] & ~robust[p]).sum())
                only_us = int((~robust[k] & robust[p]).sum())
                flag = "" if only_ta == 0 else f"  WEAKER on {only_ta} images"
                flag += "" if oc < tc else "  SLOWER (cpu)"
                print(
                    f"{name:24} {k:8} {p:6} {robust_acc(clf, x, y):5.3f}"
                    f" {float(robust[k].float().mean()):6.3f} {rta:6.3f} {only_ta:4d}/{only_us:<4d}"
                    f" {ow:7.1f} {oc:7.1f} {tw:7.1f} {tc:7.1f} {ow / tw:5.2f}x {oc / tc:5.2f}x{flag}",
                    flush=True,
                )
        if len(peers) == 2:
            print(
                f"    ta vs ta@100: robust {float(robust['ta'].float().mean()):.3f} / "
                f"{float(robust['ta@100'].float().mean()):.3f}, images only ta broke "
                f"{int((~robust['ta'] & robust['ta@100']).sum())}, only ta@100 broke "
                f"{int((robust['ta'] & ~robust['ta@100']).sum())}",
                flush=True,
            )
        if args.members:
            for k in variants:
                if k != "ours@10":
                    print(f"    {k} members (cpu): {member_times(clf, x, y, threat, variants[k])}")
            for p in peers:
                print(f"    {p} members (cpu): {ta_member_times(multis[p], clf, x, y)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end ('only': images only the peer "
          "broke / only we broke; peer ta: torchattacks AutoAttack 'standard', 10 steps; ta@100: "
          "its composition at the paper's 100 steps)")  # fmt: skip


if __name__ == "__main__":
    main()
