"""FAB (robustlab) vs torchattacks' FAB on the digits CNN: same algorithm, so the minimal norms
should agree; prints median/mean minimal norms and the time ratio measured side by side
(interleaved runs, best of ``--reps``, process CPU time, 1 torch thread).

    .venv/bin/python benchmarks/fab_vs_torchattacks.py --n 100 --steps 100 --reps 2
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    import torchattacks

    torch.set_num_threads(1)
    clf = models.create("digits-cnn")
    d = datasets.get("digits")(split="test")
    x, y = d.x[: args.n], d.y[: args.n]

    class Net(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return clf.logits(z)

    print(f"{'norm':5} {'robustlab med/mean':>20} {'torchattacks med/mean':>22} {'time ratio':>10}")
    for norm, tnorm, eps in (("inf", "Linf", 1.0), ("2", "L2", 10.0)):
        threat = ThreatModel(norm, eps)
        best = {"rl": float("inf"), "ta": float("inf")}
        for _ in range(args.reps):
            t = time.process_time()
            res = attacks.create("fab", {"steps": args.steps})(
                clf, x, y, threat, rng=ExampleRNG.from_seed(0, torch.arange(len(x)))
            )
            best["rl"] = min(best["rl"], time.process_time() - t)
            t = time.process_time()
            adv = torchattacks.FAB(Net(), norm=tnorm, eps=eps, steps=args.steps, n_classes=10)(x, y)
            best["ta"] = min(best["ta"], time.process_time() - t)
        mn = res.extra["min_norm"]
        with torch.no_grad():
            fooled = clf.logits(adv).argmax(1) != y
        ref = torch.where(fooled, threat.distance(adv, x), torch.tensor(float("inf")))
        fin, rfin = mn[torch.isfinite(mn)], ref[torch.isfinite(ref)]
        print(
            f"{norm:5} {float(mn.median()):9.4f}/{float(fin.mean()):.4f} "
            f"{float(ref.median()):11.4f}/{float(rfin.mean()):.4f} "
            f"{best['rl'] / best['ta']:9.2f}x  ({best['rl']:.1f} s vs {best['ta']:.1f} s)"
        )


if __name__ == "__main__":
    main()
