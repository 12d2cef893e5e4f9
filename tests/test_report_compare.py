"""Multi-run report (``robustlab report RUN_A RUN_B``): the comparison section against a direct
computation from the records (differences), scipy's paired permutation test (p-values) and
scipy's Benjamini-Hochberg (q-values); the leaderboard of a two-model run against the records;
rendering checked in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.core.records import without_diagnoses
from robustlab.report import build_report, write_report
from robustlab.report.leaderboard import _min_rank, leaderboard
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = """
name: compare-test
models:
  - {{name: {model}, label: digits-v}}
data: {{name: digits, params: {{split: test}}}}
probes:
  - {{kind: perturbation, name: gaussian_noise, levels: [2]}}
  - {{kind: attack, name: fgsm, levels: [0.1]}}
"""
SUITE2 = """
name: leaderboard-test
models:
  - {name: digits-mlp}
  - {name: digits-cnn}
data: {name: digits, params: {split: test}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3]}
  - {kind: evalset, name: digits-resplit, data: {name: digits, params: {test_fraction: 0.1, seed: 1}}}
  - {kind: attack, name: fgsm, levels: [0.05, 0.1]}
"""
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("compare")
    store = Store(root / "runs.db")
    a = run_suite(Suite.from_yaml(SUITE.format(model="digits-mlp")), store, progress=False)
    b = run_suite(Suite.from_yaml(SUITE.format(model="digits-cnn")), store, progress=False)
    two = run_suite(Suite.from_yaml(SUITE2), store, progress=False)
    return {"root": root, "db": root / "runs.db", "store": store, "a": a, "b": b, "two": two}


def _report_cli(runs: dict[str, Any], *ids: str) -> dict[str, Any]:
    out = runs["root"] / "out"
    res = CliRunner().invoke(app, ["report", *ids, "--store", str(runs["db"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    name = "-vs-".join(ids)
    html, js = out / f"{name}.html", out / f"{name}.json"
    assert html.name in res.output.replace("\n", "") and html.exists()
    return {"html": html, "json": js, "content": json.loads(js.read_text())}


def test_comparison_matches_records_and_scipy(runs: dict[str, Any]) -> None:
    from scipy.stats import false_discovery_control, permutation_test

    rep = _report_cli(runs, runs["a"], runs["b"])
    assert rep["html"].name == f"{runs['a']}-vs-{runs['b']}.html"
    c = rep["content"]
    assert c["run"]["id"] == runs["b"]  # the report of the last run, compared with the first
    (pair,) = c["comparison"]["pairs"]
    assert (pair["a"], pair["b"]) == (runs["a"], runs["b"])
    da = without_diagnoses(runs["store"].records(runs["a"]))
    db = without_diagnoses(runs["store"].records(runs["b"]))
    rows = pair["rows"]
    assert {(r["kind"], r["probe"], r["level"]) for r in rows} == set(
        map(tuple, da[["kind", "probe", "level"]].drop_duplicates().values.tolist())
    )
    pvals = []
    for r in rows:
        ga = da[(da["probe"] == r["probe"]) & (da["level"] == r["level"])]
        gb = db[(db["probe"] == r["probe"]) & (db["level"] == r["level"])]
        ja = ga.set_index(["replicate", "example_id"]).sort_index()["correct"].fillna(0.0)
        jb = gb.set_index(["replicate", "example_id"]).sort_index()["correct"].fillna(0.0)
        assert ja.index.equals(jb.index)  # same examples: the paired test applies
        assert r["a"] == pytest.approx(ja.mean()) and r["b"] == pytest.approx(jb.mean())
        assert r["diff"] == pytest.approx(jb.mean() - ja.mean())
        assert r["ci_lo"] <= r["diff"] <= r["ci_hi"]
        d = (jb - ja).to_numpy()
        ref = permutation_test(
            (d,),
            lambda x, axis: np.mean(x, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=10_000,
            random_state=0,
        ).pvalue
        assert r["p_value"] == pytest.approx(ref, abs=0.02)
        pvals.append(r["p_value"])
        good = (r["diff"] > 0) == r["higher_is_better"]
        want = ("better" if good else "worse") if r["q_value"] <= 0.05 else "n.s."
        assert r["verdict"] == want
    assert [r["q_value"] for r in rows] == pytest.approx(list(false_discovery_control(pvals)))
    assert pair["tested"] == len(rows)
    # the CNN resists FGSM at eps 0.1 far better than the MLP (65 % vs 39 % robust accuracy): a
    # real, significant difference; clean they differ by 1.4 pp, not significant on 360 digits
    fgsm = next(r for r in rows if r["kind"] == "attack")
    assert fgsm["diff"] > 0.1 and fgsm["verdict"] == "better"
    text = rep["html"].read_text()
    assert "Comparison of runs" in text and f"B = {runs['b']} vs A = {runs['a']}" in text


def test_single_run_report_unchanged_but_for_leaderboard(runs: dict[str, Any]) -> None:
    c = build_report(runs["store"], runs["a"])
    assert "comparison" not in c and c["summary"]["leaderboard"] == []  # one model: none
    html, _ = write_report(runs["store"], runs["a"], runs["root"] / "single")
    assert html.name == f"{runs['a']}.html"
    assert "Leaderboard" not in html.read_text() and "Comparison of runs" not in html.read_text()


def test_leaderboard_matches_records(runs: dict[str, Any]) -> None:
    rep = _report_cli(runs, runs["two"])
    board = rep["content"]["summary"]["leaderboard"]
    df = runs["store"].records(runs["two"])
    acc = df.assign(c=df["correct"].fillna(0.0)).groupby(["model", "kind", "probe", "level"])["c"]
    acc = acc.mean().reset_index()
    ref: dict[str, dict[str, float]] = {}
    for m in ("digits-mlp", "digits-cnn"):
        g = acc[acc["model"] == m]
        ref[m] = {
            "clean_accuracy": float(g[g["kind"] == "clean"]["c"].iloc[0]),
            "ood_worst_accuracy": float(g[g["kind"].isin(["perturbation", "evalset"])]["c"].min()),
            "adv_worst_accuracy": float(g[g["kind"] == "attack"]["c"].min()),
        }
    assert {r["model"] for r in board} == set(ref)
    for r in board:
        for k, v in ref[r["model"]].items():
            assert r[k] == pytest.approx(v)
            other = next(x for x in board if x is not r)[k]
            assert r[f"{k}_rank"] == (1 if v >= other else 2)
    means = [r["mean_rank"] for r in board]
    assert means == sorted(means) and board[0]["rank"] == 1
    assert "Leaderboard" in rep["html"].read_text()


def test_leaderboard_ties_and_missing() -> None:
    """Competition ranking: ties share the best rank, a missing value ranks last; the overall
    order by mean rank, then clean rank, then suite order; fully tied models share a rank."""
    assert _min_rank(np.array([0.9, 0.8, 0.9, np.nan])).tolist() == [1, 3, 1, 4]
    clean = pd.DataFrame({"model": ["a", "b", "c"], "accuracy": [0.9, 0.9, 0.8]})
    pert = pd.DataFrame({"model": ["a", "b", "c"], "probe": "noise", "level": 1.0,
                         "accuracy": [0.5, 0.5, 0.7]})  # fmt: skip
    rows = leaderboard(["a", "b", "c"], clean, {"perturbation": pert}, pd.DataFrame())
    assert [r["model"] for r in rows] == ["a", "b", "c"]  # a, b tied on everything: suite order
    assert [r["rank"] for r in rows] == [1, 1, 3]
    assert [r["mean_rank"] for r in rows] == [1.5, 1.5, 2.0]  # c: clean rank 3, OOD rank 1
    assert "adv_worst_accuracy" not in rows[0]  # no attacks in the run: criterion left out
    assert leaderboard(["a"], clean, {}, pd.DataFrame()) == []


def test_bad_input(runs: dict[str, Any]) -> None:
    db = str(runs["db"])
    res = CliRunner().invoke(app, ["report", runs["a"], runs["a"], "--store", db])
    assert res.exit_code == 2 and "nothing to compare" in res.output
    res = CliRunner().invoke(app, ["report", runs["a"], runs["two"], "--store", db])
    assert res.exit_code == 2 and "cannot compare run" in res.output
    assert "different models" in res.output


@pytest.mark.slow
@pytest.mark.browser
def test_comparison_in_chromium(runs: dict[str, Any], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    html = write_report(runs["store"], runs["b"], tmp_path, compare_with=[runs["a"], runs["b"]])[0]
    two = write_report(runs["store"], runs["two"], tmp_path)[0]
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(html.resolve().as_uri())
            headings = page.locator("h2").all_inner_texts()
            cells = page.locator("#comparison table tbody tr").count()
            page.goto(two.resolve().as_uri())
            headings2 = page.locator("h2").all_inner_texts()
            board = page.locator("#leaderboard table tbody tr").count()
        finally:
            browser.close()
    assert errors == []
    assert headings[:2] == ["Comparison of runs", "Summary"] and "Leaderboard" not in headings
    assert cells == 3  # clean, gaussian_noise@2, fgsm@0.1
    assert headings2[:2] == ["Summary", "Leaderboard"] and board == 2
