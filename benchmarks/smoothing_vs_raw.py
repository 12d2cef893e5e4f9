"""Randomized smoothing cost, measured side by side in one run.

1. CERTIFY overhead: ``GaussianSmoothing.certify`` (n0 + n noisy copies per example) vs the model's
   bare batched forward passes over the same number of inputs, noise pre-drawn (target <= 1.05x),
   at a few batch sizes and memory layouts (contiguous vs channels_last), to show which is best.
2. Sequential vs fixed-N CERTIFY: mean samples per certificate at equal certified accuracy at the
   target radius (target >= 5x fewer at the default radius 0.5).

    .venv/bin/python benchmarks/smoothing_vs_raw.py [--examples 60] [--n 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab.certify.sequential import SequentialSmoothing
from robustlab.certify.smoothing import GaussianSmoothing
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.models.torch_adapter import TorchClassifier


def best_of(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def overhead(model, x, ids, n, repeats) -> None:  # type: ignore[no-untyped-def]
    print(f"\n[1] CERTIFY vs raw forward passes ({len(x)} examples x {100 + n} samples)")
    total = len(x) * (100 + n)
    for layout in ("contiguous", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = model.module.to(memory_format=fmt)
        clf = TorchClassifier(net, 10, model.domain, name="bench")
        for bs in (100, 400, 1000):
            sm = GaussianSmoothing(0.25, n0=100, n=n, batch_size=bs)
            noisy = (x[:1] + 0.25 * torch.randn(bs, *x.shape[1:])).contiguous(memory_format=fmt)

            def raw(clf=clf, noisy=noisy, bs=bs) -> None:  # type: ignore[no-untyped-def]
                with torch.no_grad():
                    for _ in range(total // bs):
                        clf.logits(noisy).argmax(1)

            def cert(clf=clf, sm=sm) -> None:  # type: ignore[no-untyped-def]
                sm.certify(
                    clf, x, torch.zeros(len(x), dtype=torch.long), rng=ExampleRNG.from_seed(0, ids)
                )

            t_raw, t_cert = best_of(raw, repeats), best_of(cert, repeats)
            print(f"  {layout:13s} batch {bs:5d}: raw {t_raw:6.2f}s  certify {t_cert:6.2f}s  "
                  f"ratio {t_cert / t_raw:5.2f}x  ({total / t_raw:,.0f} inputs/s raw)")  # fmt: skip
    model.module.to(memory_format=torch.contiguous_format)


def sequential(model, x, y, ids, n, radius) -> None:  # type: ignore[no-untyped-def]
    print(f"\n[2] sequential vs fixed-N (n = {n}, radius {radius}, alpha 0.001, {len(x)} examples)")
    rng = ExampleRNG.from_seed(1, ids)
    t = time.perf_counter()
    fixed = GaussianSmoothing(0.25, n0=100, n=n).certify(model, x, y, rng=rng)
    t_fixed = time.perf_counter() - t
    t = time.perf_counter()
    seq = SequentialSmoothing(0.25, n0=100, n=n, radius=radius).certify(model, x, y, rng=rng)
    t_seq = time.perf_counter() - t
    acc = [((c.pred == y) & (c.radius >= radius)).float().mean().item() for c in (fixed, seq)]
    s_fixed, s_seq = (
        fixed.extra["samples"].float().mean().item(),
        seq.extra["samples"].float().mean().item(),
    )
    agree = ((fixed.radius >= radius) == (seq.radius >= radius)).float().mean().item()
    print(f"  certified accuracy at {radius}: fixed {acc[0]:.3f}  sequential {acc[1]:.3f}  "
          f"(same decision on {agree:.1%} of examples)")  # fmt: skip
    print(
        f"  mean samples: fixed {s_fixed:,.0f}  sequential {s_seq:,.0f}  -> {s_fixed / s_seq:.1f}x fewer"
    )
    print(
        f"  wall time: fixed {t_fixed:.1f}s  sequential {t_seq:.1f}s  -> {t_fixed / t_seq:.1f}x faster"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=60)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-overhead", type=int, default=2000)
    ap.add_argument("--radius", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default="overhead,sequential", help="comma-separated parts to run")
    args = ap.parse_args()
    torch.manual_seed(0)
    d = datasets.get("digits")(split="test")
    x, y, ids = d.x[: args.examples], d.y[: args.examples], d.ids[: args.examples]
    model = models.create("digits-cnn-noise", {"sigma": 0.25})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model digits-cnn-noise")
    if "overhead" in args.parts:
        overhead(model, x[:20], ids[:20], args.n_overhead, args.repeats)
    if "sequential" in args.parts:
        sequential(model, x, y, ids, args.n, args.radius)


if __name__ == "__main__":
    main()
