"""Cost of the example grids (issue 21): regenerating only the shown examples vs the whole probe.

Runs the demo suite's probes on one model (digits CNN, seed 0: five corruptions at 3 levels, FGSM
and PGD-10 at 4 levels; or ``--store`` reuses a stored run), then measures, side by side in one
process at one torch thread (CPU time, ``time.process_time``; median of ``--repeats``):

- ``ExamplesSection.build`` (4 worst examples per probe at its worst level, regenerated in one
  batch per group, PNGs encoded) with models and data warm, and cold (a fresh process context:
  models read from the on-disk cache, data reloaded);
- ``build_report`` + ``render`` of the whole report (every section, including this one);
- the reference cost of re-running each shown (probe, level) on all its examples (what
  regenerating without selecting would cost), through the runner's ``execute_unit``;
- one dashboard drill-down's regeneration (6 examples of PGD at its worst level), cold and warm
  (cached by the run's units digest).

    .venv/bin/python benchmarks/report_examples.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

SUITE = """
name: examples-bench
seed: 0
model: {name: digits-cnn}
data: {name: digits, params: {split: test}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3, 5]}
  - {kind: perturbation, name: impulse_noise, levels: [1, 3, 5]}
  - {kind: perturbation, name: gaussian_blur, levels: [1, 3, 5]}
  - {kind: perturbation, name: contrast, levels: [1, 3, 5]}
  - {kind: perturbation, name: brightness, levels: [1, 3, 5]}
  - {kind: attack, name: fgsm, levels: [0.05, 0.1, 0.2, 0.3]}
  - {kind: attack, name: pgd, params: {steps: 10}, levels: [0.05, 0.1, 0.2, 0.3]}
metrics: [accuracy]
"""


def _cpu(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None, help="a store holding a run of SUITE (else run it)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from robustlab.report import build_report
    from robustlab.report import examples as ex
    from robustlab.report.html import render
    from robustlab.report.sections.examples import ExamplesSection, worst_groups
    from robustlab.runner import Suite, context, run_suite
    from robustlab.runner.execute import execute_unit
    from robustlab.runner.plan import WorkUnit
    from robustlab.store import Store

    path = args.store or str(Path(tempfile.mkdtemp()) / "runs.db")
    st = Store(path)
    runs = st.runs()
    run = (
        runs.iloc[0]["id"] if args.store else run_suite(Suite.from_yaml(SUITE), st, progress=False)
    )
    df, info = st.records(run), st.run_info(run)
    print(f"run {run}: {len(df)} records; load average {os.getloadavg()[0]:.1f}")

    def cold_section():
        context._PROCESS_CONTEXT = None
        return ExamplesSection().build(df, info)

    cold, _ = _cpu(cold_section, args.repeats)
    warm, data = _cpu(lambda: ExamplesSection().build(df, info), args.repeats)
    n_shown = sum(len(g["examples"]) for g in data["groups"])
    report, _ = _cpu(lambda: render(build_report(st, run)), args.repeats)

    suite = Suite.parse(info["suite"])
    ctx = context.process_context()

    def full_groups():
        for g in worst_groups(df, info):
            p = next(p for p in suite.probes if p.display == g["probe"])
            unit = WorkUnit(seed=suite.seed, task=suite.task, model=suite.models[0], replicate=0,
                            data=suite.data, probe=p, level=g["level"], shard=0,
                            shard_size=10**6)  # fmt: skip
            execute_unit(unit, ctx)

    full, _ = _cpu(full_groups, args.repeats)
    picked = __import__("pandas").concat(
        [ex.pick(df[(df["probe"] == g["probe"]) & (df["level"] == g["level"])], 4)
         for g in worst_groups(df, info)]
    )  # fmt: skip
    regen, _ = _cpu(lambda: ex.regenerate(info, picked), args.repeats)
    g = df[(df["probe"] == "pgd") & (df["level"] == df[df["probe"] == "pgd"]["level"].max())]
    rows = ex.pick(g, 6)

    def drill():
        shown, _ = ex.regenerate(info, rows)
        return [ex.view(x) for x in shown]

    context._PROCESS_CONTEXT = None
    drill_cold, _ = _cpu(drill, 1)
    drill_warm, _ = _cpu(drill, args.repeats)
    print(f"examples section: {len(data['groups'])} groups, {n_shown} examples shown")
    print(f"  section build, warm            {warm:7.3f} s CPU")
    print(f"  section build, cold context    {cold:7.3f} s CPU")
    print(
        f"  whole report (build + render)  {report:7.3f} s CPU  (section warm = "
        f"{warm / report:.2f} of it)"
    )
    print(f"  of which regeneration only     {regen:7.3f} s CPU (the rest: PNGs, diffs)")
    print(
        f"  re-running the shown groups on all {len(g)} examples each: {full:7.3f} s CPU "
        f"(regeneration / full = {regen / full:.3f})"
    )
    print(
        f"  drill-down regeneration (6 PGD examples): cold {drill_cold:.3f} s, "
        f"warm {drill_warm:.3f} s CPU"
    )


if __name__ == "__main__":
    main()
