"""Attack defaults by measured strength, on models the defaults were not tuned on (issue 16).

Two parts, per (model, eps) setup, per example (robust = still correctly classified):

- ``pgd``: robustlab ``pgd`` under several step rules (``--rules``: ``2.5/steps`` -- Madry et al.'s,
  the default before 2026-12-07 --, ``eps/4``, ``eps/10``, ``eps/2``, ``max(2.5/steps,1/4)``) vs
  torchattacks' ``PGD`` (step eps/4, random start; restarts via ``MultiAttack``) at the same budget
  (``--pgd-budgets``, steps x restarts). Prints robust accuracy and, against torchattacks and
  against the union of every PGD run of the setup ("best"), how many examples each broke that the
  other did not.
- ``aa``: torchattacks' ``AutoAttack(version="standard")``, and robustlab's ensemble members
  run alone on every clean-correct example with the streams the ensemble gives them (APGD-CE with
  ``--ce-steps``; APGD-T one target at a time, so "n targets x s steps" is the union of the first
  n, for s in ``--t-steps``; Square 5,000): an ensemble's verdict is the union of its members'
  (members only see the examples still robust, and an example's result does not depend on the
  others in the batch). torchattacks runs under ``--ta-seeds`` seeds. Prints every candidate
  (CE steps x 3/5/9 targets x T steps) vs each torchattacks run, and a summary over the setups
  (examples only torchattacks broke, summed over setups and seeds); ``--verify`` then runs the real
  ``autoattack`` ``--versions`` (default fast, standard) end to end (per example vs each
  torchattacks run, CPU time vs torchattacks', and whether the members' union predicted it);
  ``--t-steps`` (or ``--ce-steps``) with no values skips the candidates.

Models (trained here in seconds, cached; none is a model the presets were tuned on, which were
``digits-cnn`` seed 0 width 16 and a Fashion-MNIST SmallCNN seed 0):

    fashion-bn     SmallCNN (BatchNorm) width 16, seed 1, 10,000 Fashion-MNIST images, 2 epochs
    fashion-mlp    MLP 784-128-128-10, seed 0, same data, 3 epochs
    digits-cnn-s1  digits-cnn seed 1 width 32
    digits-cnn-s2  digits-cnn seed 2 width 8
    digits-cnn-s3  digits-cnn seed 3 (width 16, the default architecture)
    digits-mlp-s1  digits-mlp seed 1 hidden 128
    digits-255     SmallCNN width 16 seed 3 trained on raw 0-255 pixels; domain [0, 255], eps x 255
                   (torchattacks sees the same function on [0, 1] inputs: it clamps to [0, 1])

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attack_defaults_strength.py --part pgd
    .venv/bin/python benchmarks/attack_defaults_strength.py --part aa --models digits-cnn-s1 --verify
    .venv/bin/python benchmarks/attack_defaults_strength.py --part aa --t-steps --verify \
        --versions fast --ta-seeds 2    # the real fast preset only, on every model
    .venv/bin/python benchmarks/attack_defaults_strength.py --part aa --t-steps --verify \
        --versions fast CE50-T3x30 --models held-out   # HELD_OUT: checked after the choice
"""

from __future__ import annotations

import argparse
import re
import time
from functools import partial
from typing import Any

import torch

from robustlab.attacks.apgd_core import apgd_run
from robustlab.attacks.base import Misclassified
from robustlab.attacks.ensemble import VERSIONS
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain, ThreatModel
from robustlab.data.base import Dataset
from robustlab.models import TorchClassifier
from robustlab.models.nets import MLP, SmallCNN
from robustlab.models.training import cached_module, train_classifier


def _trained(key: dict[str, Any], make: Any, data: Dataset, epochs: int) -> torch.nn.Module:
    train = partial(train_classifier, make, data, seed=key["seed"], epochs=epochs)
    return cached_module({**key, "epochs": epochs, "v": 1}, make, train)


def fashion_bn(seed: int = 1, width: int = 16) -> TorchClassifier:
    make = partial(SmallCNN, 1, 10, 28, width)
    data = datasets.get("fashion-mnist")(split="train", limit=10000)
    key = {"name": "bench-fashion-bn", "seed": seed, "limit": 10000}
    net = _trained(key if width == 16 else {**key, "width": width}, make, data, 2)
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 28, 28)), name="fashion-bn")


def fashion_mlp() -> TorchClassifier:
    make = partial(MLP, 784, 128, 10)
    data = datasets.get("fashion-mnist")(split="train", limit=10000)
    net = _trained({"name": "bench-fashion-mlp", "seed": 0, "limit": 10000}, make, data, 3)
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 28, 28)), name="fashion-mlp")


def digits_255() -> TorchClassifier:
    make = partial(SmallCNN, 1, 10, 8, 16)
    d = datasets.get("digits")(split="train")
    raw = Dataset(x=d.x * 255, y=d.y, name="digits-255", ids=d.ids)
    net = _trained({"name": "bench-digits-255", "seed": 3}, make, raw, 20)
    return TorchClassifier(net, 10, Domain(0.0, 255.0, (1, 8, 8)), name="digits-255")


# name -> (model factory, data factory, eps list in [0, 1] pixel units)
MODELS: dict[str, tuple[Any, Any, list[float]]] = {
    "fashion-bn": (fashion_bn, "fashion", [8 / 255, 0.05]),
    "fashion-mlp": (fashion_mlp, "fashion", [8 / 255, 0.05]),
    "digits-cnn-s1": (lambda: models.create("digits-cnn", {"seed": 1, "width": 32}), "digits",
                      [0.05, 0.1]),
    "digits-cnn-s3": (lambda: models.create("digits-cnn", {"seed": 3}), "digits", [0.05, 0.1]),
    "digits-cnn-s2": (lambda: models.create("digits-cnn", {"seed": 2, "width": 8}), "digits",
                      [0.05, 0.1]),
    "digits-mlp-s1": (lambda: models.create("digits-mlp", {"seed": 1, "hidden": 128}), "digits",
                      [0.05, 0.1]),
    "digits-255": (digits_255, "digits", [0.05, 0.1]),
}  # fmt: skip

# held out: never used to choose a default (checked after the choice; not in the default --models)
HELD_OUT: dict[str, tuple[Any, Any, list[float]]] = {
    **{
        f"digits-cnn-w{w}-s{s}": (
            partial(models.create, "digits-cnn", {"seed": s, "width": w}),
            "digits",
            [0.1],
        )
        for w, seeds in ((8, (3, 4, 5, 6)), (16, (4, 5, 6, 7)))
        for s in seeds
    },
    "fashion-bn-s2-w8": (partial(fashion_bn, 2, 8), "fashion", [8 / 255, 0.05]),
}


def load_data(kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = (
        datasets.get("fashion-mnist")(split="test", limit=n)
        if kind == "fashion"
        else datasets.get("digits")(split="test")
    )
    return d.x[:n], d.y[:n], d.ids[:n]


class UnitNet(torch.nn.Module):
    """The adapter's logits on [0, 1] inputs (torchattacks clamps to [0, 1]): x -> clf(lo + x (hi -
    lo)); holds the weights so torchattacks finds their device."""

    def __init__(self, clf: Any) -> None:
        super().__init__()
        self.clf, self.module = clf, clf.module
        self.lo, self.span = clf.domain.lo, clf.domain.hi - clf.domain.lo

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.clf.logits(self.lo + z * self.span)

    logits = forward


def robust(clf: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf.logits(x).argmax(1) == y


def cpu(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t


# step rules (fraction of eps) by name
RULES = {
    "2.5/steps": lambda s: 2.5 / s,
    "eps/4": lambda s: 0.25,
    "eps/10": lambda s: 0.1,
    "eps/2": lambda s: 0.5,
    "max(2.5/steps,1/4)": lambda s: max(2.5 / s, 0.25),
}


def pgd_part(
    clf: Any, x: Any, y: Any, ids: Any, eps: float, args: argparse.Namespace, tally: dict
) -> None:
    """Per budget: every rule and torchattacks under ``args.seeds`` seeds; adds to ``tally``
    ((budget, rule) -> [robust acc - best known, examples missed vs best, only-ta-broke,
    only-ours-broke], summed over setups and seeds)."""
    import torchattacks as ta

    scale = clf.domain.hi - clf.domain.lo
    threat = ThreatModel("inf", eps * scale)
    net = UnitNet(clf).eval()
    for budget in args.pgd_budgets:
        steps, restarts = (int(v) for v in budget.split("x"))
        masks: dict[tuple[str, int], torch.Tensor] = {}
        times: dict[str, float] = {}
        for seed in range(args.seeds):
            for rule in args.rules:
                params = {"steps": steps, "restarts": restarts, "step_size": RULES[rule](steps)}
                atk = attacks.create("pgd", params)
                res, t = cpu(atk, clf, x, y, threat, rng=ExampleRNG.from_seed(seed, ids))
                masks[rule, seed], times[rule] = ~res.success, times.get(rule, 0) + t
            torch.manual_seed(seed)
            pgds = [ta.PGD(net, eps=eps, alpha=eps / 4, steps=steps) for _ in range(restarts)]
            ref = ta.MultiAttack(pgds) if restarts > 1 else pgds[0]
            adv, t = cpu(ref, (x - clf.domain.lo) / scale, y)
            masks["ta", seed], times["ta"] = robust(net, adv, y), times.get("ta", 0) + t
        best = torch.stack(list(masks.values())).all(0)
        print(
            f"  PGD-{steps} x {restarts}, {args.seeds} seed(s): best known {best.float().mean():.3f}"
        )
        for rule in [*args.rules, "ta"]:
            row = tally.setdefault((budget, rule), [0.0, 0, 0, 0])
            accs, missed, only_ta, only_us = [], 0, 0, 0
            for seed in range(args.seeds):
                m, ref_m = masks[rule, seed], masks["ta", seed]
                accs.append(float(m.float().mean()))
                missed += int((m & ~best).sum())
                only_ta, only_us = (
                    only_ta + int((m & ~ref_m).sum()),
                    only_us + int((~m & ref_m).sum()),
                )
            row[0] += sum(accs) / len(accs) - float(best.float().mean())
            row[1], row[2], row[3] = row[1] + missed, row[2] + only_ta, row[3] + only_us
            tail = (
                ""
                if rule == "ta"
                else f"  vs ta (same seed): only ta broke {only_ta:3d}, only ours {only_us:3d}"
            )
            print(
                f"    {rule:20} robust {' '.join(f'{a:.3f}' for a in accs)}  missed vs best "
                f"{missed:3d}  cpu {times[rule]:6.1f}s{tail}"
            )


def pgd_summary(tally: dict, n_setups: int) -> None:
    print(f"\nPGD summary over {n_setups} setups (sums over setups and seeds):")
    print(
        f"  {'budget':7} {'rule':20} {'mean gap to best (pp)':>21} {'missed':>6} {'only ta':>7} {'only ours':>9}"
    )
    for (budget, rule), (gap, missed, only_ta, only_us) in tally.items():
        ta_cols = "" if rule == "ta" else f"{only_ta:7d} {only_us:9d}"
        print(f"  {budget:7} {rule:20} {100 * gap / n_setups:21.2f} {missed:6d} {ta_cols}")


def apgd_t_per_target(
    clf: Any, x: Any, y: Any, ids: Any, threat: ThreatModel, steps: int, n_targets: int
) -> tuple[list[torch.Tensor], float]:
    """Per target k: success of APGD-T's k-th run on every example, with the ensemble's streams."""
    with torch.no_grad():
        z = clf.logits(x)
    order = z.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    hits, total = [], 0.0
    for k in range(n_targets):
        r = ExampleRNG.from_seed(0, ids).fork("apgd_t")
        r.seek(k)  # APGD-T's k-th target run makes the k-th draw of the member's streams
        (_, ok, _), t = cpu(
            apgd_run, clf, x, y, order[:, k], threat, Misclassified(), "dlr", steps, r
        )
        hits.append(ok.cpu())
        total += t
    return hits, total


def member(clf: Any, x: Any, y: Any, ids: Any, threat: Any, name: str, params: dict) -> Any:
    atk = attacks.create(name, params)
    res, t = cpu(atk, clf, x, y, threat, rng=ExampleRNG.from_seed(0, ids).fork(name))
    return res.success.cpu(), t


def aa_part(clf: Any, x: Any, y: Any, ids: Any, eps: float, args: argparse.Namespace, tally: dict):
    """Candidates (APGD-CE steps x APGD-T targets x steps, + Square 5,000) and, with ``--verify``,
    the real ``--versions`` vs torchattacks' AutoAttack under ``args.ta_seeds`` seeds; adds to
    ``tally`` (label -> [robust acc summed over setups, examples only torchattacks broke (summed
    over its seeds), examples only ours broke, worst setup's only-torchattacks count, our CPU s,
    torchattacks' CPU s (mean over its seeds)])."""
    import torchattacks as ta

    scale = clf.domain.hi - clf.domain.lo
    threat = ThreatModel("inf", eps * scale)
    net = UnitNet(clf).eval()
    ta_robs, t_ta = [], 0.0
    for seed in range(args.ta_seeds):
        ref = ta.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
        adv, t = cpu(ref, (x - clf.domain.lo) / scale, y)
        ta_robs.append(robust(net, adv, y))
        t_ta += t / args.ta_seeds
    print(
        "  torchattacks AutoAttack "
        + "/".join(f"{r.float().mean():.3f}" for r in ta_robs)
        + f" (seeds 0..{args.ta_seeds - 1}; cpu {t_ta:.1f}s each)"
    )
    rows: dict[str, torch.Tensor] = {}
    if args.ce_steps and args.t_steps:
        candidates(clf, (x, y, ids), threat, args, ta_robs, rows, tally)
    if args.verify:
        for version in args.versions:
            members = preset(version)
            atk = attacks.create("autoattack", {"attacks": list(members)})
            res, t = cpu(atk, clf, x, y, threat, rng=ExampleRNG.from_seed(0, ids))
            mine = robust(clf, res.x_adv, y)
            assert torch.equal(mine, ~res.success)
            ce_p, t_p = members[0], members[1]
            label = f"CE{ce_p['steps']} T{t_p['n_targets']}x{t_p['steps']} Sq"
            label = next((k for k in rows if k.startswith(label)), None)
            union = (
                ""
                if label is None
                else f"  union {'==' if torch.equal(rows[label], mine) else '!='}"
            )
            only_ta, only_us = add(tally, f"{version} (real run)", mine, ta_robs, t, t_ta)
            print(
                f"    {version + ' (real run)':24} {mine.float().mean():6.3f}  only ours broke "
                f"{'/'.join(map(str, only_us)):>7}  only torchattacks broke "
                f"{'/'.join(map(str, only_ta))}  cpu {t:.1f}s = {t / t_ta:.2f}x torchattacks'{union}"
            )
    return rows, ta_robs


def preset(version: str) -> tuple[Any, ...]:
    """A version's members, or ``CE<steps>-T<targets>x<steps>`` (+ Square 5,000)."""
    if version in VERSIONS:
        return VERSIONS[version]
    ce, k, t = (int(v) for v in re.fullmatch(r"CE(\d+)-T(\d+)x(\d+)", version).groups())
    return (
        {"name": "apgd", "loss": "ce", "steps": ce},
        {"name": "apgd_t", "loss": "dlr", "steps": t, "n_targets": k},
        {"name": "square", "n_queries": 5000},
    )


def add(tally: dict, label: str, mine: Any, ta_robs: list, t: float = 0.0, t_ta: float = 0.0):
    only_ta = [int((mine & ~r).sum()) for r in ta_robs]
    only_us = [int((~mine & r).sum()) for r in ta_robs]
    row = tally.setdefault(label, [0.0, 0, 0, 0, 0.0, 0.0])
    row[0] += float(mine.float().mean())
    row[1], row[2] = row[1] + sum(only_ta), row[2] + sum(only_us)
    row[3] = max(row[3], max(only_ta))
    row[4], row[5] = row[4] + t, row[5] + t_ta
    return only_ta, only_us


def candidates(clf: Any, data: Any, threat: Any, args: Any, ta_robs: list, rows: dict, tally: dict):
    """Members alone on the clean-correct examples; each candidate's verdict is their union."""
    x, y, ids = data
    clean = robust(clf, x, y)
    cc = torch.nonzero(clean).flatten()
    xc, yc, ic = x[cc], y[cc], ids[cc]
    t_steps = args.t_steps
    ce = {
        s: member(clf, xc, yc, ic, threat, "apgd", {"loss": "ce", "steps": s})
        for s in args.ce_steps
    }
    tgt = {s: apgd_t_per_target(clf, xc, yc, ic, threat, s, 9) for s in t_steps}
    sq, t_sq = member(clf, xc, yc, ic, threat, "square", {"n_queries": 5000})
    print(
        f"  ours alone on {len(cc)} clean-correct: "
        + ", ".join(f"APGD-CE {s} {ce[s][1]:.1f}s" for s in args.ce_steps)
        + ", "
        + ", ".join(f"APGD-T 9x{s} {tgt[s][1]:.1f}s" for s in t_steps)
        + f", Square {t_sq:.1f}s"
    )
    for ce_s, t_s, k in [(c, s, k) for c in args.ce_steps for s in t_steps for k in (3, 5, 9)]:
        fooled = ce[ce_s][0] | sq | torch.stack(tgt[t_s][0][:k]).any(0)
        label = f"CE{ce_s} T{k}x{t_s} Sq" + (
            " (standard)" if (ce_s, t_s, k) == (100, 100, 9) else ""
        )
        mine = clean.clone()
        mine[cc] = ~fooled
        rows[label] = mine
        only_ta, only_us = add(tally, label, mine, ta_robs)
        print(
            f"    {label:24} {mine.float().mean():6.3f}  only ours broke "
            f"{'/'.join(map(str, only_us)):>7}  only torchattacks broke {'/'.join(map(str, only_ta))}"
        )


def aa_summary(tally: dict, n_setups: int) -> None:
    print(f"\nautoattack over {n_setups} setups (vs torchattacks' AutoAttack, all its seeds):")
    print(
        f"  {'candidate':24} {'mean robust':>11} {'only ta':>7} {'only ours':>9} {'worst setup':>11}"
        "  cpu ours / torchattacks (sums)"
    )
    for label, (acc, only_ta, only_us, worst, t, t_ta) in tally.items():
        tail = f"  {t:.1f}s / {t_ta:.1f}s = {t / t_ta:.2f}x" if t_ta else ""
        print(f"  {label:24} {acc / n_setups:11.4f} {only_ta:7d} {only_us:9d} {worst:11d}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["pgd", "aa", "all"], default="all")
    ap.add_argument(
        "--models", nargs="*", default=list(MODELS), choices=[*MODELS, *HELD_OUT, "held-out"]
    )
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", type=float, nargs="*", default=None, help="override (0-1 units)")
    ap.add_argument("--pgd-budgets", nargs="*", default=["10x1", "50x5"])
    ap.add_argument("--rules", nargs="*", default=list(RULES), choices=list(RULES))
    ap.add_argument("--seeds", type=int, default=1, help="PGD: seeds per rule (and torchattacks)")
    ap.add_argument("--t-steps", type=int, nargs="*", default=[10, 20, 30, 100])
    ap.add_argument("--ce-steps", type=int, nargs="*", default=[50, 100])
    ap.add_argument("--ta-seeds", type=int, default=1, help="aa: torchattacks AutoAttack seeds")
    ap.add_argument("--verify", action="store_true", help="run the real --versions ensembles")
    ap.add_argument(
        "--versions", nargs="*", default=["fast", "standard"], help="names or CE50-T9x30 forms"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    tally: dict = {}
    aa_tally: dict = {}
    n_setups = n_aa = 0
    names = [m for n in args.models for m in (HELD_OUT if n == "held-out" else [n])]
    for name in names:
        factory, kind, eps_list = {**MODELS, **HELD_OUT}[name]
        clf = factory()
        x, y, ids = load_data(kind, args.n)
        x = clf.domain.lo + x * (clf.domain.hi - clf.domain.lo)
        for eps in args.eps or eps_list:
            print(f"{name} eps={eps:.4g} n={len(x)} clean {robust(clf, x, y).float().mean():.3f}")
            if args.part in ("pgd", "all"):
                pgd_part(clf, x, y, ids, eps, args, tally)
                n_setups += 1
            if args.part in ("aa", "all"):
                aa_part(clf, x, y, ids, eps, args, aa_tally)
                n_aa += 1
    if tally:
        pgd_summary(tally, n_setups)
    if aa_tally:
        aa_summary(aa_tally, n_aa)


if __name__ == "__main__":
    main()
