"""`robustlab run demo` as a whole process vs the user's own script doing the same evaluation.

Issue 22's target: the CLI run (warm model cache, HTML report included) within 1.1x of a
hand-written script. The script side (``--script``, in this file) is what a user would write with
scikit-learn, numpy/scipy and torchattacks: load the digits test split, load the same three
trained ``digits-cnn`` weights (robustlab's weight cache files, read with ``torch.load``), apply the
same five corruptions at severities 1/3/5 (numpy, ImageNet-C tables), FGSM and PGD-10 (torchattacks,
step eps/4 with a random start: robustlab's default for 10 steps) at eps 0.05/0.1/0.2/0.3, and
print the accuracy table. Both sides run as fresh processes, alternately, ``--repeats`` times;
the medians of wall time and of the child's CPU time (user + system, ``RUSAGE_CHILDREN``) are
compared. Both get ``OMP_NUM_THREADS=--threads`` (default 1: CPU times are then comparable on a
loaded machine).

Results are checked side by side: deterministic probes (clean, blur, contrast, brightness, FGSM)
must agree to the example count (the script's blur is scipy's float64 filter, robustlab's a
float32 separable convolution: a boundary example may flip; the count of differing probes is
printed); random probes (gaussian and impulse noise, PGD's random start) draw different random
numbers on each side, so they must agree within 3 binomial standard errors of a difference of
two accuracies on the 360 test images (``3 sqrt(2 p (1 - p) / 360)``).

A phase breakdown of one more (untimed, instrumented) robustlab run follows: start-up imports,
suite loading, validation, model and data creation, units, store writes (in the writer thread,
overlapping the units), report; each phase's time excludes the phases nested in it and includes
the modules it imports lazily.

    .venv/bin/python benchmarks/demo_vs_script.py [--repeats 5] [--threads 1] [--no-phases]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROBUSTLAB = Path(sys.executable).with_name("robustlab")
SEVERITY = {  # ImageNet-C tables (imagecorruptions), severities 1..5
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
}
LEVELS = (1, 3, 5)
EPS = (0.05, 0.1, 0.2, 0.3)
RANDOM = {"gaussian_noise", "impulse_noise", "pgd"}


# the hand-written script ---------------------------------------------------------------------
def script(weights: list[str], out: str) -> None:
    """What a user writes: numpy corruptions and torchattacks on the three trained CNNs."""
    import numpy as np
    import torch
    import torchattacks
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    d = load_digits()
    x_all = (d.images / 16.0).astype(np.float32)[:, None]
    y_all = d.target.astype(np.int64)
    _, te = train_test_split(np.arange(len(y_all)), test_size=0.2, random_state=0, stratify=y_all)
    te = np.sort(te)
    x_np, y = x_all[te], torch.from_numpy(y_all[te])
    x = torch.from_numpy(x_np)
    rng = np.random.default_rng(0)

    def corrupt(name: str, c: float) -> np.ndarray:
        if name == "gaussian_noise":
            out = x_np + rng.normal(size=x_np.shape) * c
        elif name == "impulse_noise":
            u = rng.random(x_np.shape)
            out = np.where(u < c / 2, 1.0, np.where(u < c, 0.0, x_np))
        elif name == "gaussian_blur":
            out = gaussian_filter(x_np.astype(np.float64), (0, 0, c, c), mode="nearest")
        elif name == "contrast":
            mean = x_np.mean(axis=(2, 3), keepdims=True)
            out = (x_np - mean) * c + mean
        else:  # brightness of a grey image: the HSV value is the grey level
            out = x_np + c
        return np.clip(out, 0, 1).astype(np.float32)

    class Net(nn.Module):  # digits-cnn's architecture (width 16, 8x8 inputs)
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )  # fmt: skip
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(t))

    results = {}
    for rep, path in enumerate(weights):
        net = Net()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.eval()

        def acc(inputs: torch.Tensor) -> float:
            with torch.no_grad():
                return (net(inputs).argmax(1) == y).float().mean().item()  # noqa: B023

        results[f"{rep}|clean|0"] = acc(x)
        for name, table in SEVERITY.items():
            for s in LEVELS:
                results[f"{rep}|{name}|{s:g}"] = acc(torch.from_numpy(corrupt(name, table[s - 1])))
        for eps in EPS:
            results[f"{rep}|fgsm|{eps:g}"] = acc(torchattacks.FGSM(net, eps=eps)(x, y))
            pgd = torchattacks.PGD(net, eps=eps, alpha=eps / 4, steps=10, random_start=True)
            results[f"{rep}|pgd|{eps:g}"] = acc(pgd(x, y))
    for k, v in results.items():
        print(f"{k:28s} {v:.3f}")
    Path(out).write_text(json.dumps(results))


# the phase breakdown (instrumented robustlab run) ----------------------------------------------
def phases(store: str, out: str) -> None:
    """Run ``robustlab run demo`` in this process with exclusive timers around its phases."""
    import threading

    t_start = time.perf_counter()
    import robustlab.cli as cli

    t_imported = time.perf_counter()
    totals: dict[str, float] = {"imports: start-up (robustlab.cli)": t_imported - t_start}
    local = threading.local()

    def timed(label: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*a, **kw):  # type: ignore[no-untyped-def]
            stack = local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                nested = stack.pop()
                totals[label] = totals.get(label, 0.0) + dt - nested
                if stack:
                    stack[-1] += dt

        return wrapper

    t0 = time.perf_counter()  # what `run` imports first (to patch it here): torch, sqlalchemy...
    import robustlab.runner.engines as engines
    import robustlab.runner.runner as runner
    import robustlab.runner.validation as validation
    from robustlab.core.registry import REGISTRIES
    from robustlab.store import Store

    totals["imports: runner chain (torch, pandas, sqlalchemy)"] = time.perf_counter() - t0

    cli._load_suite = timed("suite load (YAML, pydantic)", cli._load_suite)
    for mod in (validation, runner):
        mod.validate_suite = timed("validation (names, params, data)", mod.validate_suite)
        mod.validate_models = timed("validation (models x probes)", mod.validate_models)
    for kind in ("models", "datasets"):
        reg = REGISTRIES[kind]
        reg.create = timed(f"{kind[:-1]} creation", reg.create)  # type: ignore[method-assign]
    engines.execute_unit = timed("units (execute_unit)", engines.execute_unit)
    Store.write_units = timed("store writes (writer thread)", Store.write_units)  # type: ignore[method-assign]
    for m in ("create_run", "find_resumable", "done_units", "finish_run", "run_info"):
        setattr(Store, m, timed("store (main thread)", getattr(Store, m)))
    cli._open_store = timed("store (main thread)", cli._open_store)
    runner.environment = timed("run environment", runner.environment)
    runner._model_facts = timed("run environment", runner._model_facts)
    cli._print_summary = timed("summary table", cli._print_summary)
    cli._write_report = timed("report (build + HTML)", cli._write_report)
    import builtins
    import importlib

    # lazy imports (torch, pandas, registry discovery, ...) are a phase of their own, wherever
    # they happen; a phase's time excludes the imports inside it
    builtins.__import__ = timed("imports: lazy (discovery, report, ...)", builtins.__import__)
    importlib.import_module = timed(
        "imports: lazy (discovery, report, ...)", importlib.import_module
    )
    sys.argv = ["robustlab", "run", "demo", "--store", store, "--no-progress"]
    t0 = time.perf_counter()
    with contextlib.suppress(SystemExit):
        cli.main()
    totals["total in process"] = time.perf_counter() - t_start
    Path(out).write_text(json.dumps(totals))


# the benchmark ---------------------------------------------------------------------------------
def timed_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, res.stdout


def weight_files() -> list[str]:
    """robustlab's cached weights of digits-cnn replicates 0-2 (trained now if missing)."""
    from robustlab.core.paths import cache_dir
    from robustlab.core.registry import models

    paths = []
    for seed in (0, 1, 2):
        models.create("digits-cnn", {"seed": seed})  # warm the cache
        key = {"name": "digits-cnn", "seed": seed, "epochs": 20, "width": 16, "v": 1}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        p = cache_dir() / "models" / f"digits-cnn-{digest}.pt"
        assert p.is_file(), p
        paths.append(str(p))
    return paths


def robustlab_accuracies(store: str) -> dict[str, float]:
    from robustlab.store import Store

    st = Store(store)
    df = st.records(st.runs().iloc[0]["id"], expand=False)
    acc = df.groupby(["replicate", "probe", "level"])["correct"].mean()
    return {f"{r}|{p}|{lvl:g}": float(v) for (r, p, lvl), v in acc.items()}


def compare(ours: dict[str, float], theirs: dict[str, float], n: int = 360) -> bool:
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    exact_diff, worst, ok = [], 0.0, True
    for k in sorted(ours):
        probe = k.split("|")[1]
        d = ours[k] - theirs[k]
        if probe in RANDOM:
            p = (ours[k] + theirs[k]) / 2
            tol = 3 * (2 * p * (1 - p) / n) ** 0.5 + 1e-9
            worst = max(worst, abs(d) / tol if tol > 1e-9 else (0 if d == 0 else 9))
            if abs(d) > tol:
                ok = False
                print(f"  random probe {k}: robustlab {ours[k]:.3f} script {theirs[k]:.3f}")
        elif round(abs(d) * n) > 0:
            exact_diff.append(f"{k} ({round(d * n):+d} examples)")
    n_exact = sum(k.split("|")[1] not in RANDOM for k in ours)
    print(
        f"results: {n_exact - len(exact_diff)} of {n_exact} deterministic accuracies equal to the "
        f"example{'' if not exact_diff else '; differing: ' + ', '.join(exact_diff)}"
    )
    print(
        f"         {len(ours) - n_exact} random-probe accuracies within 3 binomial SE of the "
        f"difference: {'yes' if ok else 'NO'} (largest |diff| / tolerance {worst:.2f})"
    )
    for probe in ("pgd", "fgsm"):
        for eps in EPS:
            a = [ours[f"{r}|{probe}|{eps:g}"] for r in range(3)]
            b = [theirs[f"{r}|{probe}|{eps:g}"] for r in range(3)]
            print(
                f"  {probe} eps {eps:<4g} mean robust accuracy over 3 models: robustlab "
                f"{sum(a) / 3:.3f}, script (torchattacks) {sum(b) / 3:.3f}"
            )
    return ok and len(exact_diff) <= 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both processes")
    ap.add_argument("--no-phases", action="store_true", help="skip the phase breakdown")
    ap.add_argument("--script", nargs=2, metavar=("WEIGHTS_JSON", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--phases", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.script:
        script(json.loads(args.script[0]), args.script[1])
        return
    if args.phases:
        phases(*args.phases)
        return

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    weights = weight_files()
    print(f"load average {os.getloadavg()}, cpus {os.cpu_count()}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/script.json"
        ours_cmd = lambda i: [str(ROBUSTLAB), "run", "demo", "--store", f"{tmp}/r{i}/store.db"]  # noqa: E731
        theirs_cmd = [sys.executable, str(HERE), "--script", json.dumps(weights), out]
        timed_child(ours_cmd("warm"), env)  # warm: model and data caches, the OS file cache
        timed_child(theirs_cmd, env)
        rows: list[tuple[float, float, float, float]] = []
        print(f"{'rep':>3} {'robustlab wall':>14} {'script wall':>11} {'ratio':>6}  "
              f"{'robustlab cpu':>13} {'script cpu':>10} {'ratio':>6}  load")  # fmt: skip
        for i in range(args.repeats):  # alternate the order: neither side always runs first
            if i % 2 == 0:
                ow, oc, _ = timed_child(ours_cmd(i), env)
                tw, tc, _ = timed_child(theirs_cmd, env)
            else:
                tw, tc, _ = timed_child(theirs_cmd, env)
                ow, oc, _ = timed_child(ours_cmd(i), env)
            rows.append((ow, tw, oc, tc))
            print(f"{i:>3} {ow:>13.2f}s {tw:>10.2f}s {ow / tw:>5.2f}x  {oc:>12.2f}s {tc:>9.2f}s "
                  f"{oc / tc:>5.2f}x  {os.getloadavg()[0]:.2f}")  # fmt: skip
        med = [statistics.median(c) for c in zip(*rows, strict=True)]
        print(f"median: robustlab {med[0]:.2f} s vs script {med[1]:.2f} s wall: "
              f"{med[0] / med[1]:.2f}x (target <= 1.10x); CPU {med[2]:.2f} s vs {med[3]:.2f} s: "
              f"{med[2] / med[3]:.2f}x; median of per-pair ratios: wall "
              f"{statistics.median(r[0] / r[1] for r in rows):.2f}x, CPU "
              f"{statistics.median(r[2] / r[3] for r in rows):.2f}x")  # fmt: skip
        ok = compare(robustlab_accuracies(f"{tmp}/r{args.repeats - 1}/store.db"),
                     json.loads(Path(out).read_text()))  # fmt: skip
        print(f"results agree: {'yes' if ok else 'NO'}")
        if not args.no_phases:
            ph = f"{tmp}/phases.json"
            cmd = [sys.executable, str(HERE), "--phases", f"{tmp}/p/store.db", ph]
            wall, cpu, _ = timed_child(cmd, env)
            totals = json.loads(Path(ph).read_text())
            print(f"phases of one instrumented robustlab run (wall {wall:.2f} s with interpreter "
                  f"start, CPU {cpu:.2f} s; exclusive seconds):")  # fmt: skip
            total = totals.pop("total in process")
            inside = sum(v for k, v in totals.items() if "writer thread" not in k)
            for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
                print(f"  {k:40s} {v:6.3f}")
            print(f"  {'other (CLI, planning, progress, exit)':40s} {total - inside:6.3f}")
            print(f"  {'interpreter start (outside Python)':40s} {wall - total:6.3f}")


if __name__ == "__main__":
    main()
