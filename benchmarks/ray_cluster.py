"""Speed-up of a Ray cluster of 1 and 2 nodes on this machine over the local engine.

An embarrassingly parallel suite: the digits test split (360 images) in shards of ``--shard``
examples, the clean evaluation and PGD (``--steps`` steps) at three budgets on ``digits-cnn``;
every unit is independent of the others. The local engine runs it in this process with one torch
thread; the Ray engine on :class:`robustlab.testing.ray_cluster.LoopbackCluster` clusters of 1
and 2 nodes (``ray start`` on 127.0.0.2, 127.0.0.3, one CPU each, so one worker process per
node). Each configuration runs ``--repeats`` times, alternating, after one cold run (the
cluster's first: worker processes start, import torch and load model and data) that is reported
apart. Printed: median wall times, speed-up over the local engine ``S(k) = T_local / T_ray(k)``,
speed-up per worker ``S(k) / k``, the ratio ``T_ray(1) / T_ray(2)``, the busy fraction (sum of
unit times / wall / workers), where units ran and how often each worker loaded the model.
Records of every run are checked equal to the local engine's.

Wall time is the measure here (parallelism saves wall time, not CPU time), so the load of the
machine matters: the load average is printed before and after. On a 2-core machine shared with
other work, expect little speed-up.

    .venv/bin/python benchmarks/ray_cluster.py [--repeats 3] [--steps 100] [--shard 45]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from robustlab.runner import (
    ComponentSpec,
    LocalEngine,
    ModelSpec,
    ProbeSpec,
    RayEngine,
    Suite,
    run_suite,
)
from robustlab.store import Store
from robustlab.testing.ray_cluster import LoopbackCluster

KEY = ["model", "replicate", "probe", "kind", "level", "example_id"]


def make_suite(steps: int, shard: int) -> Suite:
    return Suite(
        name="ray-bench",
        models=[ModelSpec(name="digits-cnn")],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=[
            ProbeSpec(kind="attack", name="pgd", params={"steps": steps}, levels=[0.05, 0.1, 0.2])
        ],  # fmt: skip
        seed=0,
        shard_size=shard,
    )


def timed(suite: Suite, store: Store, engine) -> tuple[float, pd.DataFrame, float, float]:
    """(wall seconds, canonical records, sum of unit seconds, CPU seconds) of one fresh run; CPU
    seconds: this process's, plus the Ray worker processes' (from ``/proc``) for the Ray engine."""
    workers = {p.pid for p in getattr(engine, "placements", [])}  # of the previous run
    before = {pid: _cpu(pid) for pid in workers}
    c0, t0 = time.process_time(), time.perf_counter()
    rid = run_suite(suite, store, engine=engine, resume=False, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for p in {p.pid for p in getattr(engine, "placements", [])}:
        cpu += _cpu(p) - before.get(p, 0.0)
    info = store.run_info(rid)
    assert info["status"] == "complete", info["message"]
    rec = store.records(rid, expand=False)
    rec = rec.drop(columns=[c for c in ("unit_key", "id", "run_id") if c in rec])
    rec = rec.sort_values(KEY, kind="mergesort").reset_index(drop=True)
    busy = sum(u["seconds"] or 0.0 for u in info["units"])  # time inside the units
    return wall, rec[sorted(rec.columns)], busy, cpu


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 when it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--shard", type=int, default=45)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a Ray worker with one CPU
    suite = make_suite(args.steps, args.shard)
    tmp = Path(tempfile.mkdtemp(prefix="rl-ray-bench-"))
    store = Store(tmp / "runs.db")
    try:
        measure(args, suite, store)
    finally:
        store.engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, suite: Suite, store: Store) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")

    local = LocalEngine()
    _, ref, _, _ = timed(suite, store, local)  # warm: model trained/cached, modules imported
    n_units = len(store.run_info(store.resolve("latest"))["units"])
    times: dict[str, list[float]] = {"local": []}
    busy: dict[str, list[float]] = {"local": []}
    cpus: dict[str, list[float]] = {"local": []}
    cold: dict[int, float] = {}
    where: dict[int, tuple[str, int, list[int]]] = {}
    for k in args.nodes:
        times[f"ray{k}"], busy[f"ray{k}"], cpus[f"ray{k}"] = [], [], []
        with LoopbackCluster(nodes=k, cpus=1) as cluster:
            engine = RayEngine(cluster.address)
            cold[k], rec, _, _ = timed(suite, store, engine)
            pd.testing.assert_frame_equal(rec, ref, check_exact=True)
            for _ in range(args.repeats):  # alternate with the local engine: same load
                for name, eng in (("local", local), (f"ray{k}", engine)):
                    wall, rec, b, c = timed(suite, store, eng)
                    pd.testing.assert_frame_equal(rec, ref, check_exact=True)
                    times[name].append(wall)
                    busy[name].append(b)
                    cpus[name].append(c)
            places = engine.placements  # of the last run
            per_node = Counter(p.node_ip for p in places)
            loads = {p.pid: p.loads.get("model", 0) for p in places}
            where[k] = ("+".join(str(per_node[ip]) for ip in sorted(per_node)), len(loads),
                        sorted(set(loads.values())))  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"suite: digits-cnn, PGD {args.steps} steps x 3 budgets + clean, {n_units} units; "
          f"records of every run equal the local engine's")  # fmt: skip

    t_local = statistics.median(times["local"])
    print(
        f"\n{'engine':<16}{'cold s':>8}{'wall s':>8}{'speed-up':>10}{'per worker':>12}"
        f"{'CPU s':>7}{'CPU/wall':>10}{'busy':>6}  units per node / processes / model loads"
    )
    for name in times:
        k = 1 if name == "local" else int(name[3:])
        t, c = statistics.median(times[name]), statistics.median(cpus[name])
        sp = t_local / t
        label = "local" if name == "local" else f"ray, {k} node(s)"
        cold_s = "" if name == "local" else f"{cold[k]:.2f}"
        tail = "" if name == "local" else "{} / {} / {}".format(*where[k])
        print(f"{label:<16}{cold_s:>8}{t:>8.2f}{sp:>10.2f}{sp / k:>12.2f}{c:>7.2f}{c / t:>10.2f}"
              f"{_busy(busy[name], times[name], k):>6}  {tail}")  # fmt: skip
    if 1 in args.nodes and 2 in args.nodes:
        r = statistics.median(times["ray1"]) / statistics.median(times["ray2"])
        print(f"\nT_ray(1 node) / T_ray(2 nodes) = {r:.2f} (2.00 would be perfect scaling)")
    print(
        "wall s: median of the repeats; CPU s: this process + the Ray workers; busy: unit time"
        " / wall / workers"
    )


def _busy(b: list[float], w: list[float], k: int) -> str:
    vals = [x / (y * k) for x, y in zip(b, w, strict=True)]
    return f"{statistics.median(vals):.2f}"


if __name__ == "__main__":
    main()
