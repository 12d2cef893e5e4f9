"""How close ``robustlab plan --estimate``'s time is to the real run (docs/cost.md).

For each suite: the calibrated estimate (seconds of model passes plus per-unit overhead), then a
real run into a temporary store, timed as the sum of its units' seconds (what the estimate
models) and as ``run_suite``'s wall time (validation, store and writer included; models are
loaded before, as ``robustlab run`` has them cached). Prints real / estimated.

    .venv/bin/python benchmarks/estimate_accuracy.py [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import torch

from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
from robustlab.runner.context import process_context
from robustlab.runner.estimate import estimate
from robustlab.store import Store


def suites() -> dict[str, Suite]:
    demo = Suite.from_yaml(str(files("robustlab") / "suites" / "demo.yaml"))
    mlp = Suite(
        name="mlp-smoothing",
        models=[ModelSpec(name="digits-mlp", replicates=[0, 1])],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=[
            ProbeSpec(kind="perturbation", name="gaussian_noise", levels=[1, 3]),
            ProbeSpec(
                kind="attack",
                name="pgd",
                params={"steps": 20, "early_stop": False},
                levels=[0.05, 0.1],
            ),
            ProbeSpec(
                kind="certifier",
                name="smoothing",
                norm="2",
                levels=[0.1],
                params={"n0": 20, "n": 200, "batch_size": 1024},
            ),
        ],  # fmt: skip
        shard_size=120,
    )
    return {"demo": demo, "mlp-smoothing": mlp}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f}, torch threads {args.threads}")
    for name, suite in suites().items():
        for m in suite.models:  # load (train, cache) outside the timing
            for rep in m.replicates:
                process_context().model(m, rep)
        c0 = time.perf_counter()
        est = estimate(suite, calibrate=True)
        cal = time.perf_counter() - c0
        with tempfile.TemporaryDirectory() as tmp:
            st = Store(Path(tmp) / "s.db")
            t0, p0 = time.perf_counter(), time.process_time()
            rid = run_suite(suite, st, resume=False, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - p0
            units = sum(u["seconds"] or 0 for u in st.run_info(rid)["units"])
        assert est.seconds is not None
        print(
            f"{name}: {len(est.units)} units, {est.totals['forward']:,} fwd "
            f"({est.totals['backward']:,} bwd); estimate {est.seconds:.2f} s (plan itself "
            f"{cal:.2f} s); units {units:.2f} s = {units / est.seconds:.2f}x; run wall "
            f"{wall:.2f} s = {wall / est.seconds:.2f}x (cpu {cpu:.2f} s)"
        )


if __name__ == "__main__":
    main()
