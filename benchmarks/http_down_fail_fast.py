"""How fast http-generator fails on an endpoint it already found unreachable (connection refused).

The first call makes ``retries + 1`` attempts with backoff and remembers the endpoint as down for
``FAILURE_TTL`` seconds; every later call within that time must fail at once, without a new
connection attempt and without backoff sleeps. tests/test_http_generator.py checks the behaviour
(the attempt count stays at ``retries + 1``); this script measures the wall time, which a test must
not assert on a loaded machine.

    .venv/bin/python benchmarks/http_down_fail_fast.py [--prompts 64] [--reps 5]

Prints the wall time of the first (retrying) call and of the generation task over ``--prompts``
prompts on the remembered-down endpoint (best of ``--reps``), with the attempt counts.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from robustlab.core.errors import ModelOutputError
from robustlab.core.registry import models, tasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llm_server import refused_url  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    params = {"model": "m", "cache": "off", "retries": 3, "backoff": 0.01, "max_backoff": 0.5}
    first, later = [], []
    for _ in range(args.reps):
        g = models.create("http-generator", {"base_url": refused_url(), **params})
        t0 = time.perf_counter()
        with contextlib.suppress(ModelOutputError):  # the expected "unreachable" error
            g.generate(["hello"])
        first.append(time.perf_counter() - t0)
        attempts = g.usage["requests"]
        x = [f"prompt {i}" for i in range(args.prompts)]
        t0 = time.perf_counter()
        ev = tasks.create("generation").evaluate(g, x, ["y"] * len(x))
        later.append(time.perf_counter() - t0)
        assert all(e and "unreachable" in e for e in ev.error)
        assert g.usage["requests"] == attempts, "the down endpoint was contacted again"
    print(f"first call ({params['retries'] + 1} attempts, backoff): {min(first) * 1e3:.1f} ms")
    print(
        f"{args.prompts} prompts on the remembered-down endpoint (0 new attempts): "
        f"{min(later) * 1e3:.1f} ms (best of {args.reps})"
    )


if __name__ == "__main__":
    main()
