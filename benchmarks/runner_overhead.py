"""Runner overhead: the demo suite's wall time vs its model forward/backward time measured directly.

Every model call the runner makes is logged (batch shape, whether an input gradient followed); the
same calls are then replayed in a bare loop (forward, plus backward where the run took a gradient),
and the ratio ``run wall time / bare replay time`` is printed. Target (issue 2): <= 1.10x on the
local engine. Models are trained (and cached) before timing, so training is not counted.

    .venv/bin/python benchmarks/runner_overhead.py [--repeats 3] [--threads N]

Wall time needs an otherwise idle machine. The CPU-time ratio (process CPU seconds, all threads
including the background writer, with ``--threads 1``) is printed too: it is far less sensitive to
other load on the machine, so it is the number to compare changes with on a busy box.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlab.core.registry import models
from robustlab.runner import Suite, run_suite
from robustlab.runner.context import process_context
from robustlab.store import Store

CALLS: list[tuple[tuple[int, ...], bool]] = []


class Recording:
    """Adapter wrapper logging each call's batch shape and whether it is differentiated."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.domain = inner.domain  # type: ignore[attr-defined]
        self.capabilities = inner.capabilities  # type: ignore[attr-defined]
        self.num_classes = inner.num_classes  # type: ignore[attr-defined]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append((tuple(x.shape), x.requires_grad))
        return self.inner.logits(x)  # type: ignore[attr-defined]

    def fingerprint(self) -> str:
        return self.inner.fingerprint()  # type: ignore[attr-defined]


@models.register("bench-digits-cnn")
def recorded(seed: int = 0) -> Recording:
    """digits-cnn with call recording (benchmark only)."""
    return Recording(models.create("digits-cnn", {"seed": seed}))


def replay(model: object, calls: list[tuple[tuple[int, ...], bool]]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for shape, grad in calls:
        x = torch.rand(shape)
        if grad:
            x.requires_grad_(True)
            logits = model.logits(x)  # type: ignore[attr-defined]
            loss = F.cross_entropy(
                logits, torch.zeros(shape[0], dtype=torch.long), reduction="none"
            )
            torch.autograd.grad(loss.sum(), x)
        else:
            with torch.no_grad():
                model.logits(x)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Suite.from_yaml(str(files("robustlab") / "suites" / "demo.yaml")).model_dump(mode="json")
    data["models"][0]["name"] = "bench-digits-cnn"
    suite = Suite.parse(data)
    inner = models.create("digits-cnn", {"seed": 0})
    for rep in data["models"][0]["replicates"]:  # train and cache outside the timing
        process_context().model(suite.models[0], rep)
    walls, bares, cpus, bare_cpus = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            CALLS.clear()
            store = Store(Path(tmp) / f"s{i}.db")
            t0, c0 = time.perf_counter(), time.process_time()
            run_suite(suite, store, resume=False, progress=False)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            calls = list(CALLS)
            b_wall, b_cpu = replay(inner, calls)
            bares.append(b_wall)
            bare_cpus.append(b_cpu)
    wall, bare = min(walls), min(bares)
    n_grad = sum(g for _, g in calls)
    print(f"model calls per run: {len(calls)} ({n_grad} with input gradient)")
    print(f"suite wall time (local engine, best of {args.repeats}): {wall:.3f} s")
    print(f"bare forward/backward replay of the same calls:      {bare:.3f} s")
    print(f"runner overhead ratio: {wall / bare:.2f}x (target <= 1.10x)")
    cpu, bare_cpu = min(cpus), min(bare_cpus)
    print(f"CPU time: suite {cpu:.3f} s, bare replay {bare_cpu:.3f} s, ratio {cpu / bare_cpu:.2f}x")


if __name__ == "__main__":
    main()
