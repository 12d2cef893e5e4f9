"""Report speed and scaling (issue 22): ``build_report`` + HTML render at 10k, 100k and 1M records,
side by side with the per-group summaries of before (the reference), and the demo report's time as
a share of the demo run's model time (target <= 0.10).

The large runs are real demo records, scaled: the demo suite is run once (digits CNN, 3 training
seeds, 5 corruptions and 2 attacks at 3-4 levels; or ``--demo-store`` reuses a stored demo run), and
its units are copied ``k`` times into a fresh store through the store's write API
(``Store.write_units``), each copy with its own example ids (offset by the copy number) and, for odd
copies, under a second model label (``digits-cnn-v2``); each unit is cut to the number of records
that gives the target size. So the records have the demo's columns, extras (queries, success,
distance), metadata (label, ink) and per-condition accuracies; groups grow with the run.

The reference is the report built with the previous ``metrics.summary.summarize`` (one pandas
``groupby`` iteration per group, a fresh ``bootstrap_ci`` draw per group and metric, a nested
``groupby("replicate")`` per group: ``metrics.summary.summarize_per_group``) and the previous read
path (``frame`` parsing every record's extra/meta JSON text). Groups above 2000 examples get their
CIs from per-value multinomial draws (the same bootstrap distribution), so the report content is
compared with the reference's only on the demo, whose groups are smaller. Both sides run
in one process, alternating, ``--repeats`` times (median). CPU time (``time.process_time``, one
torch thread, BLAS threads as the environment sets them) is printed next to wall time; the load
average shows how busy the machine was.

Model time of the demo: the sum of the unit seconds the runner stored (``units.seconds``: wall time
of each unit's work, as ``robustlab show`` reports ``elapsed``), with the demo run at one torch
thread. The report's share is printed twice: warm (build + render in this process, imports done)
and for the first report in a fresh interpreter (the report modules, pandas and matplotlib
imported on the way: what a `robustlab run` pays after its units, less what it had imported).

    .venv/bin/python benchmarks/report_scaling.py                 # demo + 10k + 100k + 1M (~2 min)
    .venv/bin/python benchmarks/report_scaling.py --reference-max 1000000   # reference at 1M too
    .venv/bin/python benchmarks/report_scaling.py --demo-store /tmp/h2/store.db
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from robustlab.core.records import frame
from robustlab.metrics.summary import summarize_per_group
from robustlab.report import build_report, tables
from robustlab.report.html import render
from robustlab.store import Store

_old_summarize = summarize_per_group  # the reference: the per-group loop before issue 22


def _old_records(store: Store) -> Callable[[str], pd.DataFrame]:
    """The reference read path: every extra/meta JSON text parsed (``frame`` of the raw records)."""
    return lambda run_id: frame(Store.records(store, run_id, expand=False))


def demo_run(store_path: str | None, tmp: Path) -> tuple[Store, str]:
    """A stored demo run: the given store's latest run, or the demo suite run now."""
    if store_path:
        store = Store(store_path)
        return store, store.resolve("latest")
    import torch

    from robustlab.cli import _load_suite
    from robustlab.runner import run_suite

    torch.set_num_threads(1)
    store = Store(tmp / "demo.db")
    print("running the demo suite (models cached after the first time) ...", flush=True)
    return store, run_suite(_load_suite("demo", [], None), store, progress=False)


def scaled_run(src: Store, run_id: str, n_target: int, dest: Store) -> str:
    """A copy of the demo run with about ``n_target`` records (see the module docstring)."""
    info = src.run_info(run_id)
    raw = src.records(run_id, expand=False)
    units = {k: g.drop(columns="unit_key") for k, g in raw.groupby("unit_key", sort=True)}
    n_src = len(raw)
    copies = max(1, -(-n_target // n_src))
    per_unit = -(-n_target // (copies * len(units)))
    new = dest.create_run(
        info["suite_name"] + f"-x{n_target}", f"scaled-{n_target}",
        _suite_json(info), info["seed"], copies * len(units), info["environment"],
        info["fingerprints"],
    )  # fmt: skip
    seconds = {u["key"]: u["seconds"] or 0.0 for u in info["units"]}
    for c in range(copies):
        batch = []
        for key, g in units.items():
            g = g.iloc[:per_unit].copy()
            g["example_id"] = g["example_id"] + c * 1_000_000
            if c % 2:
                g["model"] = g["model"] + "-v2"
            rows = {col: g[col].tolist() for col in g.columns}
            batch.append((f"{key[:56]}-{c}", f"copy {c} of {key}", rows, seconds[key], None))
        dest.write_units(new, batch)
    return new


def _suite_json(info: dict[str, Any]) -> str:
    import json

    return json.dumps(info["suite"])


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def report(store: Store, run_id: str) -> str:
    return render(build_report(store, run_id))


def measure(store: Store, run_id: str, repeats: int, reference: bool) -> dict[str, Any]:
    """Median wall/CPU seconds of build + render, new and (optionally) reference, alternating."""
    new_w, new_c, old_w, old_c = [], [], [], []
    current = tables.summarize
    report(store, run_id)  # warm-up: one-time imports and registry loading are not timed
    for _ in range(repeats):
        w, c, html = timed(lambda: report(store, run_id))
        content = build_report(store, run_id) if reference else None
        new_w.append(w)
        new_c.append(c)
        if reference:
            tables.summarize = _old_summarize
            store.records = _old_records(store)  # type: ignore[method-assign]
            try:
                w, c, _ = timed(lambda: report(store, run_id))
                old_content = build_report(store, run_id)
            finally:
                tables.summarize = current
                del store.records
            old_w.append(w)
            old_c.append(c)
    out = {"new_wall": statistics.median(new_w), "new_cpu": statistics.median(new_c)}
    out["html_kb"] = len(html.encode()) / 1024
    if reference:
        out |= {"old_wall": statistics.median(old_w), "old_cpu": statistics.median(old_c)}
        out["same_content"] = content == old_content
    return out


_FRESH = """
import sys, time
w, c = time.perf_counter(), time.process_time()
from robustlab.report import build_report
from robustlab.report.html import render
from robustlab.store import Store
store = Store(sys.argv[1])
render(build_report(store, sys.argv[2]))
print(time.perf_counter() - w, time.process_time() - c)
"""


def fresh_process(store_path: str, run_id: str, repeats: int) -> tuple[float, float]:
    """Median wall/CPU seconds of the first report in a new interpreter (robustlab's report
    modules, pandas and matplotlib imported on the way, as after a `robustlab run`'s units)."""
    import subprocess
    import sys

    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _FRESH, store_path, run_id],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        runs.append(tuple(map(float, out.stdout.split()[-2:])))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="repeats per size (median)")
    ap.add_argument(
        "--reference-max", type=int, default=100_000,
        help="run the reference (old summaries) only up to this many records (it takes minutes "
        "at 1M)",
    )  # fmt: skip
    ap.add_argument("--demo-store", help="a store whose latest run is a demo run (else run it)")
    args = ap.parse_args()
    import matplotlib.figure  # noqa: F401 - imported once, as `robustlab run` does before the report

    print(f"load average {os.getloadavg()}, cpus {os.cpu_count()}, torch threads 1")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src, run_id = demo_run(args.demo_store, tmp)
        info = src.run_info(run_id)
        model_s = sum(u["seconds"] or 0.0 for u in info["units"])
        n_demo = info["units"] and sum(u["n_records"] or 0 for u in info["units"])
        r = measure(src, run_id, args.repeats, True)
        fw, fc = fresh_process(args.demo_store or str(tmp / "demo.db"), run_id, args.repeats)
        print(
            f"\ndemo run {run_id}: {n_demo} records, model time (sum of unit seconds) "
            f"{model_s:.2f} s\n  report build+render: new wall {r['new_wall']:.3f} s cpu "
            f"{r['new_cpu']:.3f} s | reference wall {r['old_wall']:.3f} s cpu {r['old_cpu']:.3f} s"
            f" | speed-up wall {r['old_wall'] / r['new_wall']:.1f}x cpu "
            f"{r['old_cpu'] / r['new_cpu']:.1f}x | identical report content (JSON): {r['same_content']}\n"
            f"  report / model time: wall {r['new_wall'] / model_s:.3f}, cpu "
            f"{r['new_cpu'] / model_s:.3f} (target <= 0.10)\n"
            f"  first report in a fresh process (imports included): wall {fw:.3f} s cpu {fc:.3f} s"
            f" -> / model time: wall {fw / model_s:.3f}, cpu {fc / model_s:.3f}"
        )
        dest = Store(tmp / "scaled.db")
        print(f"\n{'records':>9} {'wall s':>8} {'cpu s':>8} {'cpu s/1k':>9} "
              f"{'ref wall':>9} {'ref cpu':>8} {'cpu ratio':>9} {'html KB':>8}  load")  # fmt: skip
        for n in args.sizes:
            rid = scaled_run(src, run_id, n, dest)
            n_rec = sum(u["n_records"] or 0 for u in dest.run_info(rid)["units"])
            ref = n <= args.reference_max
            r = measure(dest, rid, args.repeats if n < 1_000_000 else 1, ref)
            refs = (
                f"{r['old_wall']:9.2f} {r['old_cpu']:8.2f} {r['old_cpu'] / r['new_cpu']:8.1f}x"
                if ref
                else f"{'-':>9} {'-':>8} {'-':>9}"
            )
            print(
                f"{n_rec:9d} {r['new_wall']:8.2f} {r['new_cpu']:8.2f} "
                f"{1000 * r['new_cpu'] / n_rec:9.4f} {refs} {r['html_kb']:8.0f}  "
                f"{os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
