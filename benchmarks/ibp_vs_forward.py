"""IBP bounds vs one forward pass on the digits CNN, measured side by side (target <= 3x).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ibp_vs_forward.py [--repeats 50] [--clock
wall]``. Prints, per batch size, the median time of ``model.logits(x)`` and of
``interval_bounds(model, x, eps)`` (the adapter's normalization, the Linf box ∩ domain and every
layer, BatchNorm and max-pooling included), and their ratio. Both are timed under ``torch.no_grad``
in the same process, interleaved. The default clock is the thread's CPU time, which a loaded,
shared machine disturbs far less than wall time (single-threaded torch: ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab.certify.ibp import interval_bounds
from robustlab.core.registry import datasets, models


def _time(fn, repeats: int, clock=time.thread_time) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        t = clock()
        fn()
        out.append(clock() - t)
    return statistics.median(out)


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
    print(f"{'batch':>6} {'forward ms':>11} {'ibp ms':>9} {'ratio':>6}")
    with torch.no_grad():
        for b in (1, 32, 256):
            x = x_all[:b].contiguous()
            for _ in range(5):  # warm-up (and fx tracing, cached per module)
                clf.logits(x)
                interval_bounds(clf, x, 0.05)
            fwd, ibp = [], []
            for _ in range(3):  # interleave to share the machine's load fairly
                fwd.append(_time(lambda x=x: clf.logits(x), args.repeats, clock))
                ibp.append(_time(lambda x=x: interval_bounds(clf, x, 0.05), args.repeats, clock))
            f, i = min(fwd), min(ibp)
            print(f"{b:>6} {1e3 * f:>11.3f} {1e3 * i:>9.3f} {i / f:>6.2f}")


if __name__ == "__main__":
    main()
