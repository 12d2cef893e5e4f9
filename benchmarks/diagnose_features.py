"""Shared features for diagnoses: a suite's OOD detectors (+ calibration) vs bare forward passes.

Part 1 runs, inside one run context (so :meth:`DiagnosisEnv.features` caches as in a real run),
the diagnosis units of one model -- ``ood`` with every feature- and logit-based detector (msp,
maxlogit, energy, mahalanobis, knn) and, when registered, ``calibration`` -- and compares their
CPU time with bare forward passes (:func:`robustlab.diagnose.features.extract`) over the same
data, OOD set and fitting set (the passes the detectors cannot avoid). Target: <= 1.2x. ODIN's
extra gradient passes are timed on their own (they are extra by nature).

Part 2 times the batched kNN (Sun et al. 2022) and Mahalanobis (Lee et al. 2018) scoring against
a naive per-example Python loop over the same features (ratio), after checking both agree.

    .venv/bin/python benchmarks/diagnose_features.py [--repeats 5] [--ood 2000] [--width 64]
        [--setup digits|fashion]

``--setup fashion``: a 28x28 CNN (``trained`` small-cnn, 10 epochs on 5,000 Fashion-MNIST
images; cached) on 2,000 Fashion-MNIST test images, the digits resized to 28x28 as OOD set
(all 1,797) and 2,000 Fashion-MNIST train images as fit set.

CPU time (``time.process_time``, one torch thread) is reported: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import torch


def _cpu(fn: Any) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ood", type=int, default=2000, help="Fashion-MNIST examples (8x8) as OOD")
    ap.add_argument("--width", type=int, default=64, help="digits-cnn width (model cost)")
    ap.add_argument("--setup", choices=["digits", "fashion"], default="digits")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from robustlab.core.registry import datasets, diagnoses
    from robustlab.core.rng import ExampleRNG
    from robustlab.diagnose.base import DiagnosisEnv
    from robustlab.diagnose.features import extract
    from robustlab.diagnose.ood import fit_gaussians, knn_score, mahalanobis_score, normalise
    from robustlab.runner import Suite
    from robustlab.runner.context import Context
    from robustlab.runner.plan import data_key, plan

    has_cal = "calibration" in diagnoses.names()
    if args.setup == "digits":
        ood_spec = {
            "name": "fashion-mnist",
            "params": {"split": "test", "limit": args.ood, "size": 8},
        }
        model_yaml = f"{{name: digits-cnn, params: {{width: {args.width}}}}}"
        data_spec = {"name": "digits", "params": {"split": "test"}}
        fit_spec = {"name": "digits", "params": {"split": "train"}}
        what = f"digits-cnn width {args.width}"
    else:
        ood_spec = {"name": "digits", "params": {"split": "all", "size": 28}}
        model_yaml = ("{name: trained, label: fashion-cnn, params: {base: {name: small-cnn, "
                      "params: {side: 28}}, epochs: 10}}")  # fmt: skip
        data_spec = {"name": "fashion-mnist", "params": {"split": "test", "limit": 2000}}
        fit_spec = {"name": "fashion-mnist", "params": {"split": "train", "limit": 2000}}
        what = "fashion-cnn (small-cnn 28x28)"
    cal = "\n  - {kind: diagnosis, name: calibration}" if has_cal else ""
    suite = Suite.from_yaml(f"""
name: bench-features
models: [{model_yaml}]
data: {json.dumps(data_spec)}
probes:
  - {{kind: diagnosis, name: ood, params: {{detectors: [msp, maxlogit, energy, mahalanobis, knn],
      ood: {json.dumps(ood_spec)}, k: 50}}}}{cal}
""")
    ctx = Context()
    model = ctx.model(suite.models[0], 0)
    data = ctx.data(suite.data)
    units = [u for u in plan(suite, {data_key(suite.data): 1}) if u.kind == "diagnosis"]
    ood_set = datasets.create(ood_spec["name"], ood_spec["params"])
    fit = datasets.create(fit_spec["name"], fit_spec["params"])
    for d in (data, ood_set, fit):  # warm up (first calls allocate)
        extract(model, d.x[:64], ("penultimate",))

    def diagnosis_units(only: str | None = None) -> None:
        ctx.start_run(f"bench-{time.perf_counter_ns()}")  # a fresh run: nothing cached
        for u in units:
            if only is not None and u.probe.name != only:
                continue
            diag = ctx.component(diagnoses, u.probe)
            diag.run(model, data, 0.0, DiagnosisEnv(u, ctx, ExampleRNG.from_seed(0, data.ids)))

    def bare_passes() -> None:
        for d in (data, ood_set, fit):
            extract(model, d.x, ("penultimate",))

    odin = diagnoses.create("ood", {"detectors": ["odin"], "ood": {"name": "x"}})

    def odin_only() -> None:
        from robustlab.diagnose.ood import odin_score

        for d in (data, ood_set):
            odin_score(model, d.x, odin.odin_temperature, odin.odin_eps)

    pairs = []
    for _ in range(args.repeats):
        a, b = _cpu(diagnosis_units), _cpu(bare_passes)
        pairs.append((a, b))
    t_odin = min(_cpu(odin_only) for _ in range(max(1, args.repeats // 2)))
    t_ood = min(_cpu(lambda: diagnosis_units("ood")) for _ in range(args.repeats))
    ratios = [a / b for a, b in pairs]
    best_a, best_b = min(a for a, _ in pairs), min(b for _, b in pairs)
    n = (len(data), len(ood_set), len(fit))
    print(f"load {os.getloadavg()[0]:.1f}; {what}; data/ood/fit = {n}")
    print(
        f"diagnoses: ood (msp, maxlogit, energy, mahalanobis, knn){' + calibration' if has_cal else ''}"
    )
    print(f"{'':34s}{'best CPU s':>12s}")
    print(f"{'diagnosis units (one run)':34s}{best_a:12.4f}")
    print(f"{'bare forward passes (3 sets)':34s}{best_b:12.4f}")
    print(f"ratio: median of pairs {statistics.median(ratios):.3f}x, best/best {best_a / best_b:.3f}x "
          f"(target <= 1.2x)")  # fmt: skip
    print(f"{'ood unit alone (one run)':34s}{t_ood:12.4f}  ({t_ood / best_b:.3f}x the bare passes)")
    print(f"odin (extra, data + ood): {t_odin:.4f} s CPU = {t_odin / best_b:.2f}x the bare passes")

    # part 2: batched scoring vs a per-example loop
    fq = torch.cat([extract(model, d.x, ("penultimate",))["penultimate"] for d in (data, ood_set)])
    ff = extract(model, fit.x, ("penultimate",))["penultimate"]
    k = 50

    def knn_loop() -> np.ndarray:
        b = normalise(ff).numpy()
        out = []
        for row in normalise(fq).numpy():
            out.append(-np.sort(np.linalg.norm(b - row, axis=1))[k - 1])
        return np.array(out)

    means, prec = fit_gaussians(ff, fit.y)

    def maha_loop() -> np.ndarray:
        mu, p = means.numpy(), prec.numpy()
        out = []
        for row in fq.double().numpy():
            out.append(-min(float((row - m) @ p @ (row - m)) for m in mu))
        return np.array(out)

    for name, fast, slow in (
        ("knn", lambda: knn_score(fq, ff, k), knn_loop),
        ("mahalanobis", lambda: mahalanobis_score(fq, means, prec), maha_loop),
    ):
        np.testing.assert_allclose(fast().numpy(), slow(), rtol=1e-6, atol=1e-6)
        tf = min(_cpu(fast) for _ in range(3))
        ts = min(_cpu(slow) for _ in range(1))
        print(f"{name:12s} batched {tf:.4f} s, per-example loop {ts:.4f} s: {ts / tf:.0f}x faster "
              f"({len(fq)} queries, {len(ff)} fitting examples)")  # fmt: skip


if __name__ == "__main__":
    main()
