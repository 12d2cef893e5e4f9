"""CLI start-up (issue 22): ``robustlab --help``, ``list``, ``list attacks``, ``runs`` and ``show``
as whole processes, side by side with ``python -c pass``, interleaved over several repeats.

    .venv/bin/python benchmarks/cli_startup.py                  # ~1 minute on an idle machine
    .venv/bin/python benchmarks/cli_startup.py --repeats 21 --baseline c093608

Per command: median wall and CPU time (user + sys of the child) of the command and of the
reference, their ratio and the difference, and the target (<= 0.3 s wall). ``--baseline REV`` adds
the same command from a git worktree of an older revision (the code before the change) in the same
interleaved loop. Then the ten largest cumulative imports of each command (``python -X
importtime``) and the heavy packages it imported. Setup: a store with one real run (a tiny suite on
digits, model cached as usual), and a catalog cache in a temporary folder filled by one cold
``list`` (its time is printed: that is what the first listing after an install or edit costs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TARGET_S = 0.3
HEAVY = ("torch", "numpy", "pandas", "sklearn", "scipy", "matplotlib", "transformers", "sqlalchemy")
SUITE = """\
name: startup-bench
model: {name: digits-mlp}
data: {name: digits, params: {split: test}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1]}
  - {kind: attack, name: fgsm, levels: [0.1]}
"""
# the CLI as the console script runs it; $RL_MODULES gets the names of the imported modules
MAIN = "import sys; from robustlab.cli import main; sys.argv[0] = 'robustlab'; main()"
TRACE = """
import json, os, sys
sys.argv = ["robustlab", *sys.argv[1:]]
try:
    from robustlab.cli import main
    main()
finally:
    json.dump(sorted(sys.modules), open(os.environ["RL_MODULES"], "w"))
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process; CPU is its user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _catalog_state(tmp: Path) -> list[tuple[str, int]]:
    """The catalog cache files and their modification times (a listing that rewrites the cache
    found it stale)."""
    return sorted((f.name, f.stat().st_mtime_ns) for f in (tmp / "cache").glob("catalog-*.json"))


def top_imports(args: list[str], env: dict[str, str], cwd: Path, n: int = 10) -> list[str]:
    """The ``n`` largest cumulative import times of one run of the command, and heavy packages."""
    mods = cwd / "modules.json"
    r = subprocess.run(
        [PY, "-X", "importtime", "-c", TRACE, *args], env={**env, "RL_MODULES": str(mods)},
        cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    rows = []
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cum, name = line.split("|")
            if cum.strip().isdigit():
                rows.append((int(cum), name.rstrip()))
    rows.sort(reverse=True)
    top = [f"  {cum / 1000:8.1f} ms  {name.strip()}" for cum, name in rows[:n]]
    loaded = {m.split(".")[0] for m in json.loads(mods.read_text())}
    heavy = [h for h in HEAVY if h in loaded]
    return [*top, f"  heavy packages imported: {', '.join(heavy) or 'none'}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats per command")
    ap.add_argument("--store", help="an existing store file to use (default: a fresh tiny run)")
    ap.add_argument("--baseline", help="git revision to time side by side (a temporary worktree)")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cli-startup-"))
    worktree = None
    try:
        env = {**os.environ, "COLUMNS": "120", "ROBUSTLAB_CACHE": str(tmp / "cache")}
        store = Path(a.store).absolute() if a.store else tmp / "store.db"
        if not a.store:  # one real run; its model comes from (and goes to) the usual cache
            (tmp / "suite.yaml").write_text(SUITE)
            run_env = {k: v for k, v in env.items() if k != "ROBUSTLAB_CACHE"}
            t = time.perf_counter()
            subprocess.run(
                [PY, "-c", MAIN, "run", "suite.yaml", "--store", str(store), "--no-progress"],
                env=run_env, cwd=tmp, check=True, capture_output=True,
            )  # fmt: skip
            print(f"setup: tiny run stored in {time.perf_counter() - t:.1f} s")
        wall, cpu = timed([PY, "-c", MAIN, "list"], env, tmp)
        print(
            f"cold `list` (full discovery, writes the catalog): wall {wall:.2f} s, CPU {cpu:.2f} s"
        )

        commands = {
            "--help": ["--help"],
            "list": ["list"],
            "list attacks": ["list", "attacks"],
            "runs": ["runs", "--store", str(store)],
            "show latest": ["show", "latest", "--store", str(store)],
        }
        sides = {"python -c pass": None, "robustlab": MAIN}
        base_env = env
        if a.baseline:
            worktree = tmp / "baseline"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), a.baseline],
                check=True, capture_output=True,
            )  # fmt: skip
            base_env = {**env, "PYTHONPATH": str(worktree / "src")}
            sides[f"baseline {a.baseline}"] = MAIN
        load0 = os.getloadavg()
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        misses = 0
        for _ in range(a.repeats):  # interleaved: every side of every command once per round
            for name, args in commands.items():
                for side, code in sides.items():
                    cmd = [PY, "-c", "pass"] if code is None else [PY, "-c", code, *args]
                    e = base_env if side.startswith("baseline") else env
                    before = _catalog_state(tmp)
                    sample = timed(cmd, e, tmp)
                    if side == "robustlab" and _catalog_state(tmp) != before:
                        misses += 1  # a source file changed: this listing discovered again
                        continue
                    times.setdefault((name, side), []).append(sample)
        load1 = os.getloadavg()
        if misses:
            print(
                f"{misses} listing(s) found the catalog stale (source files edited during the "
                "benchmark) and discovered again: left out of the medians below"
            )

        print(
            f"\n{a.repeats} interleaved repeats; load average {load0[0]:.2f} before, "
            f"{load1[0]:.2f} after; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
        head = f"{'command':14} {'side':24} {'wall s':>7} {'CPU s':>7} {'wall x':>7} {'CPU x':>7}"
        print(head + f" {'wall - ref':>10}  target <= {TARGET_S} s")
        for name in commands:
            ref_w = statistics.median(w for w, _ in times[(name, "python -c pass")])
            ref_c = statistics.median(c for _, c in times[(name, "python -c pass")])
            for side in sides:
                if not times.get((name, side)):
                    print(f"{name:14} {side:24} (every sample discovered again)")
                    continue
                w = statistics.median(x for x, _ in times[(name, side)])
                c = statistics.median(x for _, x in times[(name, side)])
                mark = "" if side == "python -c pass" else ("ok" if w <= TARGET_S else "MISSED")
                print(
                    f"{name:14} {side:24} {w:7.3f} {c:7.3f} {w / ref_w:7.1f} "
                    f"{c / max(ref_c, 1e-3):7.1f} {w - ref_w:10.3f}  {mark}"
                )
        print("\nlargest cumulative imports (python -X importtime, one run each):")
        for name, args in commands.items():
            print(f"{name}:")
            print("\n".join(top_imports(args, env, tmp)))
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                capture_output=True,
            )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
