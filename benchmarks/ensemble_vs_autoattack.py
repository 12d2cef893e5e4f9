"""robustlab's ``autoattack`` ensemble vs ``torchattacks.AutoAttack`` (version "standard"), side by
side in one process on the same inputs: robust accuracy of both (ours must be at most theirs + 0.5
points: equal or better strength; flagged WEAKER otherwise), wall time and process CPU time of both,
and the ratio ours/theirs (flagged SLOWER where our CPU time is not below theirs).

Models are trained locally (no downloads): the registry's ``digits-cnn`` (8x8 scikit-learn digits,
BatchNorm CNN) and a BatchNorm ``SmallCNN`` trained on 10,000 Fashion-MNIST training images (2
epochs, cached on disk; skipped when Debian's ``dataset-fashion-mnist`` is not installed). Runs are
interleaved (ours, theirs, ours, ...), one torch thread, best of ``--reps``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble_vs_autoattack.py --n 300 --reps 2
    .venv/bin/python benchmarks/ensemble_vs_autoattack.py --only fashion --eps 0.05 --members

``--members`` also times each member of our ensembles alone on the examples it receives inside the
ensemble (where the time goes). torchattacks' "standard" AutoAttack runs APGD-CE, APGD-T (9
targets) and FAB-T with its default of 10 steps each, and Square with 5,000 queries. Our rows
(``--variants``, default all three):

- ``ours``: ``autoattack`` as configured by default (``version="standard"``: AutoAttack's own
  budget, 100 steps for APGD-CE and APGD-T with 9 targets, 5,000 Square queries; no FAB);
- ``fast``: ``autoattack`` with ``version="fast"`` (APGD-CE 50 steps, APGD-T 3 targets x 30 steps,
  Square 5,000 queries);
- ``ours@10``: our ensemble at torchattacks' budget (10 steps; ``--no-equal-budget`` skips it).
"""

from __future__ import annotations

import argparse
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
    only: str | None, n: int, eps: list[float] | None
) -> list[tuple[str, Any, Any, Any, float]]:
    out = []
    if only in (None, "digits"):
        d = datasets.get("digits")(split="test")
        clf = models.create("digits-cnn")
        for e in eps or [0.05, 0.1]:
            out.append((f"digits-cnn eps={e:.3g}", clf, d.x[:n], d.y[:n], e))
    if only in (None, "fashion"):
        try:
            d = datasets.get("fashion-mnist")(split="test", limit=n)
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


def robust_acc(clf: Any, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((clf.logits(x_adv).argmax(1) == y).float().mean())


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
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", choices=["digits", "fashion"], default=None)
    ap.add_argument("--eps", type=float, nargs="*", default=None)
    ap.add_argument("--members", action="store_true", help="also time our members one by one")
    ap.add_argument("--no-equal-budget", action="store_true", help="skip the 10-step row")
    ap.add_argument(
        "--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS), help="our rows"
    )
    args = ap.parse_args()
    import torchattacks

    torch.set_num_threads(1)
    names = [v for v in args.variants if not (args.no_equal_budget and v == "ours@10")]
    variants = {k: VARIANTS[k] for k in names}
    print(
        f"{'setup':24} {'ensemble':8} {'clean':>5} {'robust':>6} {'ta rob':>6} "
        f"{'wall s':>7} {'cpu s':>7} {'ta wall':>7} {'ta cpu':>7} {'wall':>6} {'cpu':>6}"
    )
    for name, clf, x, y, eps in setups(args.only, args.n, args.eps):
        threat = ThreatModel("inf", eps)
        net = Net(clf).eval()
        best = {k: [float("inf")] * 2 for k in [*variants, "ta"]}
        rob: dict[str, float] = {}
        for _ in range(args.reps):
            for k, params in variants.items():
                rng = ExampleRNG.from_seed(0, torch.arange(len(x)))
                atk = attacks.create("autoattack", params)
                res, w, c = timed(partial(atk, clf, x, y, threat, rng=rng))
                best[k] = [min(best[k][0], w), min(best[k][1], c)]
                rob[k] = robust_acc(clf, res.x_adv, y)
                assert abs(rob[k] - float((~res.success).float().mean())) < 1e-6, "bad success"
                assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
            ta = torchattacks.AutoAttack(
                net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0
            )
            adv, w, c = timed(partial(ta, x, y))
            best["ta"] = [min(best["ta"][0], w), min(best["ta"][1], c)]
            rob["ta"] = robust_acc(clf, adv, y)
        tw, tc = best["ta"]
        for k in variants:
            ow, oc = best[k]
            flag = "" if rob[k] <= rob["ta"] + 0.005 else "  WEAKER"
            flag += "" if oc < tc else "  SLOWER (cpu)"
            print(
                f"{name:24} {k:8} {robust_acc(clf, x, y):5.3f} {rob[k]:6.3f} {rob['ta']:6.3f} "
                f"{ow:7.1f} {oc:7.1f} {tw:7.1f} {tc:7.1f} {ow / tw:5.2f}x {oc / tc:5.2f}x{flag}"
            )
        if args.members:
            for k in variants:
                if k != "ours@10":
                    print(f"    {k} members (cpu): {member_times(clf, x, y, threat, variants[k])}")


if __name__ == "__main__":
    main()
