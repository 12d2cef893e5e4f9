"""Drift monitoring (robustlab.monitor, `robustlab monitor`): detectors against independent
references (direct ECDF and scipy for KS, an O(n^2) double sum for MMD^2, an enumeration of all
splits for the permutation p-value, a hand computation for PSI, the binomial tail for C2ST), and
the end-to-end path on real data (digits reference; clean, noisy and Fashion-MNIST batches)
through the CLI into a store."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from robustlab import monitor
from robustlab.cli import app
from robustlab.core.errors import ConfigError
from robustlab.core.records import without_diagnoses
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# KS ---------------------------------------------------------------------------------------------
def test_ks_matches_direct_ecdf_and_scipy_per_feature() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 6, size=(30, 5)).astype(float)  # ties, as pixel features have
    x = rng.integers(1, 7, size=(25, 5)).astype(float)
    res = monitor.ks_test(ref, x, alpha=0.05)
    for j in range(5):
        grid = np.concatenate([ref[:, j], x[:, j]])
        fr = (ref[:, j][None, :] <= grid[:, None]).mean(1)
        fx = (x[:, j][None, :] <= grid[:, None]).mean(1)
        assert res["d"][j] == pytest.approx(np.abs(fr - fx).max())
        assert res["p"][j] == pytest.approx(stats.ks_2samp(ref[:, j], x[:, j]).pvalue)
    assert res["statistic"] == pytest.approx(res["d"].max())
    bonf = min(1.0, 5 * res["p"].min())
    assert res["p_value"] == pytest.approx(bonf)
    assert res["alert"] == (bonf < 0.05)
    # Benjamini-Hochberg by hand: adjusted p_(i) = min_{k >= i} p_(k) m / k
    bh = monitor.ks_test(ref, x, alpha=0.05, correction="bh")
    p = np.sort(res["p"])
    adj = np.minimum.accumulate((p * 5 / np.arange(1, 6))[::-1])[::-1]
    assert bh["p_value"] == pytest.approx(min(1.0, adj[0]))
    assert bh["n_drifted"] == int((adj < 0.05).sum())
    with pytest.raises(ConfigError, match="bonferroni"):
        monitor.ks_test(ref, x, correction="holm")


# MMD --------------------------------------------------------------------------------------------
def _mmd2_direct(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    def k(u: np.ndarray, v: np.ndarray) -> float:
        return math.exp(-float(((u - v) ** 2).sum()) / (2 * sigma**2))

    n, m = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_direct_formula_and_exact_permutation_p_value() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4, 3))
    b = rng.normal(0.8, 1, (3, 3))
    z = np.concatenate([a, b])
    dists = [np.linalg.norm(z[i] - z[j]) for i in range(7) for j in range(i + 1, 7)]
    sigma = float(np.median(dists))
    assert monitor.median_bandwidth(z) == pytest.approx(sigma)
    res = monitor.mmd_test(a, b, n_permutations=4000, seed=0)
    assert res["sigma"] == pytest.approx(sigma)
    assert res["statistic"] == pytest.approx(_mmd2_direct(a, b, sigma))
    # every split of the 7 pooled points into 4 + 3: batched masks vs the direct double sum
    splits = [np.isin(np.arange(7), c) for c in itertools.combinations(range(7), 4)]
    kernel = np.exp(-((z[:, None] - z[None]) ** 2).sum(2) / (2 * sigma**2))
    batched = monitor.mmd2_masks(kernel, np.array(splits))
    direct = np.array([_mmd2_direct(z[s], z[~s], sigma) for s in splits])
    np.testing.assert_allclose(batched, direct, rtol=1e-10, atol=1e-12)
    exact_p = float((direct >= res["statistic"] - 1e-12).mean())  # includes the observed split
    assert res["p_value"] == pytest.approx(exact_p, abs=0.03)  # 4000 random permutations


# PSI --------------------------------------------------------------------------------------------
def test_psi_matches_hand_computation() -> None:
    ref = np.arange(10.0)[:, None]  # quintile edges 1.8, 3.6, 5.4, 7.2: two values per bin
    x = np.array([0.0, 0.0, 0.0, 1.0, 9.0])[:, None]  # 0.8 in the first bin, 0.2 in the last
    f = monitor.PSI_FLOOR
    hand = (0.8 - 0.2) * math.log(0.8 / 0.2) + 3 * (f - 0.2) * math.log(f / 0.2) + 0.0
    assert monitor.psi(ref, x, bins=5)[0] == pytest.approx(hand)
    assert monitor.psi(ref, ref, bins=5)[0] == 0.0
    res = monitor.psi_test(ref, x, threshold=0.2, bins=5)
    assert res["alert"] and math.isnan(res["p_value"])


# C2ST -------------------------------------------------------------------------------------------
def test_c2st_p_value_is_the_binomial_tail() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (80, 4)), rng.normal(1.0, 1, (90, 4))
    res = monitor.c2st_test(a, b, seed=0)
    assert res["n_test"] == 80  # 80 of each, halves: 40 + 40 held out
    assert res["statistic"] == pytest.approx(res["n_correct"] / 80)
    assert res["p_value"] == pytest.approx(stats.binom.sf(res["n_correct"] - 1, 80, 0.5))
    assert res["alert"]
    same = monitor.c2st_test(a[:40], a[40:], seed=0)
    assert not same["alert"]


# end to end on real data ------------------------------------------------------------------------
def _batch(name: str, level: float | None = None) -> dict:
    spec = {"name": name, "dataset": "digits", "params": {"split": "train"}, "sample": 300}
    if level is not None:
        spec["perturbation"] = {"name": "gaussian_noise", "level": level}
    return spec


CONFIG = {
    "name": "digits-prod",
    "reference": {"dataset": "digits", "params": {"split": "test"}},
    "n_permutations": 200,
    "batches": [
        _batch("clean"),
        _batch("noise-1", 1),
        _batch("noise-3", 3),
        _batch("noise-5", 5),
        {"name": "fashion", "dataset": "fashion-mnist",
         "params": {"split": "test", "size": 8, "limit": 300}},
    ],
}  # fmt: skip


def _write(tmp: Path, cfg: dict, name: str = "m.yaml") -> str:
    p = tmp / name
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_monitor_cli_on_digits_records_alerts_growing_with_severity(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    cli = CliRunner()
    res = cli.invoke(app, ["monitor", "run", _write(tmp_path, CONFIG), "--store", store])
    assert res.exit_code == 0, res.output
    st = Store(store)
    run_id = st.resolve("latest")
    info, rows = monitor.history(st, run_id)
    assert info["suite_name"] == "monitor:digits-prod" and info["suite"]["shape"] == [1, 8, 8]
    by = {(r["batch"], r["detector"]): r for r in rows}
    assert len(by) == 5 * 4
    assert not any(by[("clean", d)]["alert"] for d in monitor.DETECTORS)
    assert all(by[("fashion", d)]["alert"] for d in monitor.DETECTORS)
    assert all(by[("noise-5", d)]["alert"] for d in monitor.DETECTORS)
    mmd = [by[(b, "mmd")]["statistic"] for b in ("clean", "noise-1", "noise-3", "noise-5")]
    assert mmd == sorted(mmd) and mmd[-1] > 10 * max(mmd[1], 1e-4)
    c2st = [by[(b, "c2st")]["statistic"] for b in ("clean", "noise-1", "noise-5")]
    assert c2st == sorted(c2st)
    # the stored numbers are the detectors' on the same data: KS against scipy per feature
    cfg = monitor.load_config(_write(tmp_path, CONFIG))
    ref = monitor.load_inputs(cfg["reference"]).reshape(360, -1)
    x = monitor.load_inputs(cfg["batches"][2]).reshape(300, -1)
    p = np.array([stats.ks_2samp(ref[:, j], x[:, j]).pvalue for j in range(64)])
    assert by[("noise-3", "ks")]["p_value"] == pytest.approx(min(1.0, 64 * p.min()))
    # shown over time, with the plot in an HTML page
    html = tmp_path / "m.html"
    res = cli.invoke(app, ["monitor", "show", run_id[:12], "--store", store, "--html", str(html)])
    assert res.exit_code == 0, res.output
    assert "noise-5" in res.output and "ALERT" in res.output
    page = html.read_text()
    assert "<svg" in page and "fashion" in page
    assert page.count("<td>ALERT</td>") == sum(r["alert"] for r in rows)
    # a second invocation appends batches to the same monitor run
    again = {**CONFIG, "batches": [_batch("clean-2")]}
    res = cli.invoke(app, ["monitor", "run", _write(tmp_path, again, "b.yaml"), "--store", store])
    assert res.exit_code == 0, res.output
    info2, rows2 = monitor.history(st, run_id)
    assert info2["n_units"] == 6 and {r["index"] for r in rows2} == set(range(6))
    assert not any(r["alert"] for r in rows2 if r["batch"] == "clean-2")
    assert "c2st" in cli.invoke(app, ["show", run_id, "--store", store]).output
    res = cli.invoke(app, ["report", run_id, "--store", store, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0 and "<svg" in (tmp_path / "r" / f"{run_id}-monitor.html").read_text()
    # monitor records are drift statistics: accuracy tables leave them out
    assert without_diagnoses(st.records(run_id)).empty


def test_batch_of_another_feature_shape_is_refused_naming_both_shapes(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    cfg = {**CONFIG, "batches": [_batch("clean"), {"name": "fashion-28", "dataset": "fashion-mnist",
                                                   "params": {"split": "test", "limit": 50}}]}  # fmt: skip
    res = CliRunner().invoke(app, ["monitor", "run", _write(tmp_path, cfg), "--store", store])
    assert res.exit_code == 2
    assert "(1, 28, 28)" in res.output and "(1, 8, 8)" in res.output
    assert "fashion-28" in res.output
    assert Store(store).runs().empty  # nothing stored, not even the clean batch
    with pytest.raises(ConfigError, match=r"\(3,\).*\(2,\)"):
        monitor.score(np.zeros((5, 2)), np.zeros((5, 3)))
    # an existing monitor: a batch of another shape appended to it adds nothing either
    small = {**CONFIG, "detectors": ["ks", "psi"], "batches": [_batch("clean")]}
    res = CliRunner().invoke(app, ["monitor", "run", _write(tmp_path, small), "--store", store])
    assert res.exit_code == 0, res.output
    wrong = {**small, "batches": [{"name": "noise-28", "dataset": "digits",
                                   "params": {"split": "train", "size": 28}, "limit": 20}]}  # fmt: skip
    res = CliRunner().invoke(app, ["monitor", "run", _write(tmp_path, wrong), "--store", store])
    assert res.exit_code == 2 and "(1, 28, 28)" in res.output
    flat = tmp_path / "flat.npy"  # production inputs saved flat: (64,) is not (1, 8, 8)
    np.save(flat, monitor.load_inputs(_batch("x")).reshape(300, 64))
    res = CliRunner().invoke(
        app, ["monitor", "run", _write(tmp_path, {**small, "batches": [{"path": str(flat)}]}),
              "--store", store],
    )  # fmt: skip
    assert res.exit_code == 2 and "(64,)" in res.output and "(1, 8, 8)" in res.output
    st = Store(store)
    assert len(st.runs()) == 1 and len(st.run_info(st.resolve("latest"))["units"]) == 1
    good = tmp_path / "good.npy"  # the same inputs in the reference's shape are scored
    np.save(good, np.load(flat).reshape(300, 1, 8, 8))
    res = CliRunner().invoke(
        app, ["monitor", "run", _write(tmp_path, {**small, "batches": [{"path": str(good)}]}),
              "--store", store],
    )  # fmt: skip
    assert res.exit_code == 0 and len(st.run_info(st.resolve("latest"))["units"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"name": "x", "reference": {"dataset": "digits"}, "batches": []}))
    res = CliRunner().invoke(app, ["monitor", "run", str(bad), "--store", store])
    assert res.exit_code == 2 and "non-empty" in res.output
    res = CliRunner().invoke(
        app, ["monitor", "run", _write(tmp_path, {**small, "correction": "holm"}), "--store", store]
    )
    assert res.exit_code == 2 and "bonferroni" in res.output


@pytest.mark.slow
def test_c2st_on_model_embeddings_grows_with_noise(tmp_path: Path) -> None:
    cfg = {**CONFIG, "name": "digits-emb", "detectors": ["c2st"],
           "embedding": {"model": "digits-mlp", "layer": "penultimate"}}  # fmt: skip
    st = Store(tmp_path / "s.db")
    _, results = monitor.run_monitor(monitor.load_config(_write(tmp_path, cfg)), st)
    acc = {r["batch"]: r["c2st"]["statistic"] for r in results}
    alert = {r["batch"]: r["c2st"]["alert"] for r in results}
    assert not alert["clean"] and alert["noise-5"] and alert["fashion"]
    assert acc["clean"] < acc["noise-3"] < acc["noise-5"] < acc["fashion"]
