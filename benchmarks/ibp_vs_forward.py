"""IBP bounds vs one forward pass on the digits CNN, measured side by side (target <= 3x).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ibp_vs_forward.py [--repeats 50] [--clock
wall]``. Prints, per batch size, the median time of ``model.logits(x)`` and of
``interval_bounds(model, x, eps)`` (the adapter's normalization, the Linf box ∩ domain and every
layer, BatchNorm and max-pooling included), and their ratio. Both are timed under ``torch.no_grad``
in the same process, interleaved. IBP propagates in chunks of ``chunk`` examples
(:func:`~robustlab.certify.ibp.chunk_rows`: the largest box tensor within ~1 MiB, cache-sized);
the last column is the forward pass run in the same chunks, for reference (the ratio uses the
model's own one-piece forward pass); ``pairs`` is the median ratio of back-to-back (forward, IBP)
pairs, the most load-robust number. The default clock is the thread's CPU time, which a loaded,
shared machine disturbs far less than wall time (single-threaded torch: ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab.certify.ibp import chunk_rows, interval_bounds
from robustlab.core.registry import datasets, models


def _time(fn, repeats: int, clock=time.thread_time) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        t = clock()
        fn()
        out.append(clock() - t)
    return statistics.median(out)


def _pair_ratios(clf, x, n: int, clock) -> float:  # type: ignore[no-untyped-def]
    """Median over ``n`` back-to-back (forward, IBP) pairs of IBP time / forward time: load that
    drifts over seconds hits both halves of a pair alike."""
    ratios = []
    for _ in range(n):
        t = clock()
        clf.logits(x)
        t1 = clock()
        interval_bounds(clf, x, 0.05)
        ratios.append((clock() - t1) / max(t1 - t, 1e-9))
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    clf = models.create(args.model)
    x_all = datasets.get("digits")(split="test").x
    print(f"model {args.model}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"clock {args.clock}")  # fmt: skip
    print(f"{'batch':>6} {'forward ms':>11} {'ibp ms':>9} {'ratio':>6} {'pairs':>7} {'chunk':>6} "
          f"{'fwd in chunks ms':>17}")  # fmt: skip
    with torch.no_grad():
        for b in (1, 32, 256):
            x = x_all[:b].contiguous()
            for _ in range(5):  # warm-up (and fx tracing, cached per module)
                clf.logits(x)
                interval_bounds(clf, x, 0.05)
            rows = chunk_rows(clf.module, x)

            def chunked(x=x, rows=rows) -> None:  # type: ignore[no-untyped-def]
                for xb in x.split(rows):
                    clf.logits(xb)

            fwd, ibp, fwc = [], [], []
            for _ in range(3):  # interleave to share the machine's load fairly
                fwd.append(_time(lambda x=x: clf.logits(x), args.repeats, clock))
                ibp.append(_time(lambda x=x: interval_bounds(clf, x, 0.05), args.repeats, clock))
                fwc.append(_time(chunked, args.repeats, clock))
            f, i, fc = min(fwd), min(ibp), min(fwc)
            pairs = _pair_ratios(clf, x, args.repeats * 3, clock)
            print(f"{b:>6} {1e3 * f:>11.3f} {1e3 * i:>9.3f} {i / f:>6.2f} {pairs:>7.2f} "
                  f"{min(rows, b):>6} {1e3 * fc:>17.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
