"""Randomized smoothing cost, measured side by side in one run.

1. CERTIFY overhead: ``GaussianSmoothing.certify`` (n0 + n noisy copies per example) vs the model's
   bare batched forward passes over the same number of inputs, noise pre-drawn (target <= 1.05x),
   with the automatic batch size / layout and with fixed batch sizes (contiguous layout), plus, for
   the automatic choice, CERTIFY's CPU time outside the model's forward passes (noise, bookkeeping)
   and the overhead that implies (steadier than the ratio of totals on a loaded machine); and ART's
   ``PyTorchRandomizedSmoothing.certify`` on the same model, sigma, n0, n and batch size (if
   installed). Times are the thread's CPU time (run with ``OMP_NUM_THREADS=1``), best of repeats.
2. Sequential vs fixed-N CERTIFY: mean samples per certificate at equal certified accuracy at the
   target radius (target >= 5x fewer at the default radius 0.5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smoothing_vs_raw.py [--examples 60] [--n 20000]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from robustlab.certify import smoothing_batch
from robustlab.certify.sequential import SequentialSmoothing
from robustlab.certify.smoothing import GaussianSmoothing
from robustlab.certify.smoothing_batch import SIZES, choose
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG


def best_of(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = time.thread_time()  # CPU time of this thread: a loaded machine disturbs it far less
        fn()
        times.append(time.thread_time() - t)
    return min(times)


def paired(raw, cert, repeats: int) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """Best thread CPU times of ``raw`` and ``cert`` run alternately ``repeats`` times each, the
    median ratio of the pairs (machine load drifts: interleaving exposes both to the same drift),
    and the median wall-clock ratio of the pairs."""
    t_raw, t_cert, w_raw, w_cert = [], [], [], []
    for _ in range(repeats):
        for fn, times, walls in ((raw, t_raw, w_raw), (cert, t_cert, w_cert)):
            w, t = time.perf_counter(), time.thread_time()
            fn()
            times.append(time.thread_time() - t)
            walls.append(time.perf_counter() - w)
    ratios = sorted(c / r for r, c in zip(t_raw, t_cert, strict=True))
    wall = sorted(c / r for r, c in zip(w_raw, w_cert, strict=True))
    return min(t_raw), min(t_cert), ratios[len(ratios) // 2], wall[len(wall) // 2]


class Timed:
    """The model, timing the thread CPU spent inside ``logits`` (to split CERTIFY's time into the
    model's forward passes and everything else: a far steadier overhead measure on a loaded
    machine than the ratio of two totals, whose noise is the model's)."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.model, self.inside = model, 0.0
        self.num_classes, self.domain, self.tune_key = model.num_classes, model.domain, model

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        t = time.thread_time()
        out = self.model.logits(x)
        self.inside += time.thread_time() - t
        return out


def outside(fn, timed: Timed, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(total, outside the model) thread CPU seconds of the fastest of ``repeats`` runs."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        timed.inside = 0.0
        t = time.thread_time()
        fn()
        total = time.thread_time() - t
        best = min(best, (total, total - timed.inside))
    return best


def _raw(clf, x, size, fmt, total):  # type: ignore[no-untyped-def]
    """Bare forward passes over ``total`` distinct noisy inputs, pre-drawn, in batches of ``size``
    (as many distinct inputs as CERTIFY draws, so both stream the same amount of memory)."""
    g = torch.Generator().manual_seed(0)
    reps = -(-total // len(x))
    noisy = x.repeat_interleave(reps, 0)[:total] + 0.25 * torch.randn(total, *x.shape[1:],
                                                                      generator=g)  # fmt: skip
    batches = [b.contiguous(memory_format=fmt) for b in noisy.split(size)]
    if fmt == torch.channels_last:  # one channel: restride explicitly (contiguous() is a no-op)
        batches = [torch.empty(b.shape, memory_format=fmt).copy_(b) for b in batches]

    def run() -> None:
        with torch.no_grad():
            for b in batches:
                clf.logits(b).argmax(1)

    return run


def _art(clf, x, n, size):  # type: ignore[no-untyped-def]
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        return None
    art = PyTorchRandomizedSmoothing(
        model=clf.module, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=10, channels_first=True, sample_size=100, scale=0.25, alpha=0.001,
    )  # fmt: skip
    xs = x.numpy()
    return lambda: art.certify(xs, n=n, batch_size=size)


def overhead(model, x, ids, n, repeats) -> None:  # type: ignore[no-untyped-def]
    print(f"\n[1] CERTIFY vs raw forward passes ({len(x)} examples x {100 + n} samples, CPU time)")
    total = len(x) * (100 + n)
    y = torch.zeros(len(x), dtype=torch.long)
    t = time.perf_counter()
    size, fmt = choose(model, x.shape[1:], x.dtype, x.device)
    layout = "channels_last" if fmt == torch.channels_last else "contiguous"
    print(f"  auto: batch {size}, {layout} (probe {time.perf_counter() - t:.2f}s wall, once)")
    rows = [("auto", size, fmt)] + [
        (str(bs), bs, torch.contiguous_format) for bs in (100, 400, 1000)
    ]
    for label, bs, f in rows:  # an explicit batch size uses the contiguous layout
        sm = GaussianSmoothing(0.25, n0=100, n=n, batch_size="auto" if label == "auto" else bs)
        raw = _raw(model, x, bs, f, total)

        def cert(sm=sm) -> None:  # type: ignore[no-untyped-def]
            sm.certify(model, x, y, rng=ExampleRNG.from_seed(0, ids))

        cert()
        raw()
        t_raw, t_cert, med, wall = paired(raw, cert, repeats)
        lay = "channels_last" if f == torch.channels_last else "contiguous"
        print(f"  batch {label:>4} ({bs:4d}, {lay:13s}): raw {t_raw:6.3f}s  certify {t_cert:6.3f}s  "
              f"ratio {t_cert / t_raw:5.3f}x (median of pairs {med:5.3f}x, wall {wall:5.3f}x)  "
              f"({total / t_raw:,.0f} inputs/s raw)")  # fmt: skip
        if label == "auto":
            t_auto, raw_auto = t_cert, t_raw
            timed = Timed(model)  # the probe's choice for the model, also for its timed view
            key = (tuple(x.shape[1:]), x.dtype, str(x.device), SIZES, "Timed")
            smoothing_batch._TUNED.setdefault(model, {})[key] = (bs, f)
            raw_t = _raw(timed, x, bs, f, total)
            c_tot, c_out = outside(lambda sm=sm, m=timed: sm.certify(m, x, y, rng=ExampleRNG.from_seed(0, ids)), timed, max(3, repeats // 2))  # fmt: skip
            r_tot, r_out = outside(raw_t, timed, max(3, repeats // 2))
            model_t = r_tot - r_out
            print(f"    outside the model's forward passes: certify {c_out * 1e3:.1f} ms, raw "
                  f"{r_out * 1e3:.1f} ms (argmax, loop) -> overhead from the split "
                  f"{(model_t + c_out) / (model_t + r_out):5.3f}x")  # fmt: skip
    art = _art(model, x, n, size)
    if art is None:
        print("  ART: not installed (pip install adversarial-robustness-toolbox --no-deps)")
        return
    t_art = best_of(art, max(1, repeats - 1))
    print(f"  ART certify (batch {size}): {t_art:6.2f}s  ratio {t_art / raw_auto:5.2f}x raw "
          f"-> robustlab auto is {t_art / t_auto:.1f}x faster")  # fmt: skip


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
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--parts", default="overhead,sequential", help="comma-separated parts to run")
    args = ap.parse_args()
    torch.manual_seed(0)
    d = datasets.get("digits")(split="test")
    x, y, ids = d.x[: args.examples], d.y[: args.examples], d.ids[: args.examples]
    model = models.create("digits-cnn-noise", {"sigma": 0.25})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model digits-cnn-noise, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    if "overhead" in args.parts:
        overhead(model, x[:20], ids[:20], args.n_overhead, args.repeats)
    if "sequential" in args.parts:
        sequential(model, x, y, ids, args.n, args.radius)


if __name__ == "__main__":
    main()
