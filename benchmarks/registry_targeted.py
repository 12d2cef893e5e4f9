"""Targeted registry lookups (issue 22): ``robustlab run demo`` as a whole process with the catalog
current (a lookup imports only the module registering the name) side by side with the same command
forced to discover every looked-up registry fully (the code before the change: the first lookup in
a registry imported every module of its package), interleaved over several repeats.

    .venv/bin/python benchmarks/registry_targeted.py               # ~1-2 minutes on an idle box
    .venv/bin/python benchmarks/registry_targeted.py --repeats 7

Prints per side the median wall and CPU time (user + sys of the child), their ratios, the number
of robustlab modules (and of all modules) each imported, the load average and the cost of the
catalog check itself (reading the cache and hashing the source tree) in a fresh process. Both sides
use one temporary store and report folder (``--new`` each time) and the usual model cache, with
``--threads``-style determinism from ``OMP_NUM_THREADS=1``/``MKL_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
RUN = """
import json, os, sys
from robustlab.core import catalog
if os.environ["RL_SIDE"] == "full":  # the reference: every lookup discovers its registry fully
    catalog.import_builtin = lambda reg, name: False
sys.argv = ["robustlab", *sys.argv[1:]]
try:
    from robustlab.cli import main
    main()
except SystemExit as e:
    if e.code:
        raise
finally:
    json.dump(sorted(sys.modules), open(os.environ["RL_MODULES"], "w"))
"""
CHECK = """
import time
t = time.perf_counter(); c = time.process_time()
from robustlab.core import catalog, registry
t1 = time.perf_counter(); c1 = time.process_time()
found = catalog.import_builtin(registry.report_sections, "no-such-section")
print(found, time.perf_counter() - t1, time.process_time() - c1)
"""

IMPORT = """
import importlib, json, sys, time
c = time.process_time()
for m in json.load(open(sys.argv[1])):
    if m.split(".")[0] == "robustlab" and not m.endswith("__main__"):
        importlib.import_module(m)
print(time.process_time() - c)
"""


def timed(side: str, args: list[str], env: dict[str, str], mods: Path) -> tuple[float, float]:
    env = {**env, "RL_SIDE": side, "RL_MODULES": str(mods)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([PY, "-c", RUN, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{side} failed:\n{r.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--suite", default="demo")
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        args = ["run", a.suite, "--new", "--no-progress", "--store", str(d / "s.db")]
        args += ["--out", str(d / "report")]
        # warm-up: trains/caches the models if needed and makes the catalog current
        timed("new", args, env, d / "warm.json")
        r = subprocess.run([PY, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
        found, check_wall, check_cpu = r.stdout.split()
        print(f"load average {os.getloadavg()}, OMP/MKL threads 1, repeats {a.repeats}")
        print(
            f"catalog check in a fresh process (read cache + hash source tree): "
            f"{float(check_wall) * 1e3:.1f} ms wall, {float(check_cpu) * 1e3:.1f} ms CPU "
            f"(current: {found != 'None'})"
        )
        res: dict[str, list[tuple[float, float]]] = {"new": [], "full": []}
        mods: dict[str, list[str]] = {}
        for i in range(a.repeats):
            for side in ("new", "full") if i % 2 == 0 else ("full", "new"):
                res[side].append(timed(side, args, env, d / f"{side}.json"))
                mods[side] = json.loads((d / f"{side}.json").read_text())
        med = {s: [statistics.median(x[k] for x in v) for k in (0, 1)] for s, v in res.items()}
        for s, label in (("new", "targeted"), ("full", "full discovery (before)")):
            rl = [m for m in mods[s] if m.split(".")[0] == "robustlab"]
            print(
                f"  {label:25s} wall {med[s][0]:6.2f} s  CPU {med[s][1]:6.2f} s  "
                f"robustlab modules {len(rl):4d}  all modules {len(mods[s]):5d}"
            )
        print(
            f"  ratio full/targeted: wall {med['full'][0] / med['new'][0]:.2f}x, "
            f"CPU {med['full'][1] / med['new'][1]:.2f}x; saved CPU "
            f"{med['full'][1] - med['new'][1]:.2f} s"
        )
        # the import cost alone: each side's robustlab modules imported in a fresh process
        imp: dict[str, list[float]] = {"new": [], "full": []}
        for i in range(a.repeats * 2):
            for side in ("new", "full") if i % 2 == 0 else ("full", "new"):
                (d / "list.json").write_text(json.dumps(mods[side]))
                r = subprocess.run(
                    [PY, "-c", IMPORT, str(d / "list.json")], env=env, capture_output=True,
                    text=True, check=True,
                )  # fmt: skip
                imp[side].append(float(r.stdout.split()[-1]))
        new, full = statistics.median(imp["new"]), statistics.median(imp["full"])
        print(
            f"  importing each side's robustlab modules: targeted {new:.2f} s CPU, full "
            f"{full:.2f} s CPU, ratio {full / new:.2f}x, difference {full - new:.2f} s"
        )
        print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
