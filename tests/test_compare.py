"""``compare``: permutation p-values, Benjamini-Hochberg FDR control, missing probes, the title.

The audit: two runs of one model that differed only in the suite seed (noise draws) had a probe
flagged "better" -- every group whose bootstrap CI excluded 0 was flagged, so with many probes some
were flagged by chance. Real runs: digits CNN, 4 noise corruptions x 5 severities, seeds 0-3.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from robustlab.metrics import compare
from robustlab.metrics.significance import benjamini_hochberg, permutation_pvalue
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

SUITE = """name: seeds
seed: {seed}
model: {{name: {model}}}
data: {{name: digits}}
probes:
{probes}
"""
NOISE = "\n".join(
    f"  - {{kind: perturbation, name: {p}, levels: [1, 2, 3, 4, 5]}}"
    for p in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
)


def _run(store: Store, seed: int, model: str = "digits-cnn", probes: str = NOISE) -> str:
    suite = Suite.from_yaml(SUITE.format(seed=seed, model=model, probes=probes))
    return run_suite(suite, store, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("cmp") / "s.db")
    ids = {s: _run(store, s) for s in range(4)}
    ids["noise-trained"] = _run(store, 0, model="digits-cnn-noise")
    return store, ids


def test_permutation_pvalue_equals_exact_enumeration() -> None:
    """Paired: all 2^n sign flips enumerated; unpaired: all relabellings of a small sample."""
    d = np.array([0.9, -0.2, 0.5, 0.7, 0.1, 1.3, -0.4, 0.8])
    t = abs(d.mean())
    flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    exact = np.mean(np.abs(flips @ d) / len(d) >= t - 1e-12)
    p = permutation_pvalue(np.zeros_like(d), d, paired=True, n_perm=200_000, seed=1)
    assert p == pytest.approx(exact, abs=0.005)
    a, b = np.array([0.0, 1.0, 0.2, 0.4]), np.array([1.0, 1.5, 0.9, 1.2, 2.0])
    pooled = np.concatenate([a, b])
    stats = [
        abs(np.delete(pooled, list(idx)).mean() - pooled[list(idx)].mean())
        for idx in itertools.combinations(range(9), 4)
    ]
    exact = np.mean(np.array(stats) >= abs(b.mean() - a.mean()) - 1e-12)
    p = permutation_pvalue(a, b, paired=False, n_perm=200_000, seed=1)
    assert p == pytest.approx(exact, abs=0.005)
    assert permutation_pvalue(d, d, paired=True) == 1.0  # identical runs: nothing to test
    assert np.isnan(permutation_pvalue(np.array([np.nan]), np.array([1.0]), paired=True))


def test_benjamini_hochberg_equals_scipy() -> None:
    p = np.random.default_rng(0).uniform(size=40) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-12)
    q = benjamini_hochberg([0.01, np.nan, 0.04, 0.03])
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], false_discovery_control([0.01, 0.04, 0.03]))


@pytest.mark.slow
def test_runs_differing_only_in_the_seed_flag_nothing(runs) -> None:
    store, ids = runs
    for s in (1, 2, 3):
        df = compare(store.records(ids[0]), store.records(ids[s]))
        assert len(df) == 21 and df["p_value"].notna().all()
        assert not df["significant"].any(), df[df.significant]


@pytest.mark.slow
def test_a_real_improvement_is_still_flagged(runs) -> None:
    """A CNN trained with Gaussian noise against the plain CNN, same suite and seed."""
    store, ids = runs
    df = compare(store.records(ids[0]), store.records(ids["noise-trained"]))
    better = df[df.significant & (df["diff"] > 0)]
    assert len(better) >= 2 and set(better["probe"]) >= {"gaussian_noise"}
    assert (better["q_value"] <= 0.05).all() and (better["p_value"] <= better["q_value"]).all()


def test_missing_probes_and_the_title_in_the_cli(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    one = "  - {kind: perturbation, name: gaussian_noise, levels: [1]}"
    a = _run(
        store, 0, "digits-logreg", one + "\n  - {kind: perturbation, name: brightness, levels: [1]}"
    )
    b = _run(
        store, 0, "digits-logreg", one + "\n  - {kind: perturbation, name: contrast, levels: [1]}"
    )
    df = compare(store.records(a), store.records(b)).set_index("probe")
    assert df.loc["brightness", "status"] == "missing in B"
    assert df.loc["contrast", "status"] == "missing in A"
    assert not df.loc[["brightness", "contrast"], "significant"].any()
    cli = str(Path(sys.executable).parent / "robustlab")
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([cli, "compare", a, b, "--store", str(tmp_path / "s.db")],
                       capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"A={a} vs B={b} (B - A)" in r.stdout
    assert "missing in B" in r.stdout and "missing in A" in r.stdout
    assert "nan" not in r.stdout.lower()
    assert "Benjamini-Hochberg" in r.stdout
