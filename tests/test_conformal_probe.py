"""Conformal probes through the runner: coverage on digits, shard invariance, report, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.certify.conformal_probe import ConformalProbe, parts
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.report import write_report
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

ALPHA, SIGMA = 0.1, 0.25
SUITE = """
name: conformal-test
models: [{name: digits-cnn-noise, params: {sigma: 0.25}}]
data: {name: digits, params: {split: test}}
shard_size: SHARD
probes:
  - {kind: conformal, name: split, norm: "2", levels: [0, 0.25], params: {attack_params: {steps: 10}}}
  - {kind: conformal, name: rscp, norm: "2", levels: [0, 0.125],
     params: {n: 128, beta: 0.005, attack_params: {steps: 10}}}
"""
CHROMIUM = Path("/usr/bin/chromium")


def _suite(shard: int, only: str | None = None) -> Suite:
    suite = Suite.from_yaml(SUITE.replace("SHARD", str(shard)))
    if only is None:
        return suite
    return suite.model_copy(update={"probes": [p for p in suite.probes if p.name == only]})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("conformal")
    store = Store(root / "runs.db")
    run_id = run_suite(_suite(128), store, progress=False)
    html, js = write_report(store, run_id, root / "out")
    df = store.records(run_id)
    return {"store": store, "html": html, "json": js, "df": df[df["kind"] == "conformal"]}


def _tol(n_test: int, n_cal: int) -> float:
    # one calibration/test split: coverage has sd <= sqrt(a (1 - a) (1/n_test + 1/n_cal))
    return 3 * math.sqrt(ALPHA * (1 - ALPHA) * (1 / n_test + 1 / n_cal))


def test_records_cover_the_test_part_once_per_level(run: dict[str, Any]) -> None:
    data = datasets.create("digits", {"split": "test"})
    part = parts(data.ids, 0, "split", ConformalProbe())
    test_ids = set(data.ids[part == 2].tolist())
    assert 120 < len(test_ids) < 240  # calibration_fraction 0.5 of 360
    for (_probe, _level), g in run["df"].groupby(["probe", "level"]):
        assert set(g["example_id"]) == test_ids and len(g) == len(test_ids)
        sets = g["pred"].map(json.loads)
        assert (sets.map(len) == pd.to_numeric(g["x.set_size"])).all()
        covered = [int(lbl) in s for lbl, s in zip(g["label"], sets, strict=True)]
        assert (np.array(covered, dtype=float) == g["correct"].to_numpy()).all()


def test_coverage_meets_one_minus_alpha(run: dict[str, Any]) -> None:
    df = run["df"]
    n_test = df.groupby(["probe", "level"]).size().iloc[0]
    n_cal = int(df["x.n_calibration"].iloc[0])
    cov = df.groupby(["probe", "level"])["correct"].mean()
    size = pd.to_numeric(df["x.set_size"]).groupby([df["probe"], df["level"]]).mean()
    tol = _tol(n_test, n_cal)
    assert cov["split", 0.0] >= 1 - ALPHA - tol  # split conformal: clean only
    assert cov["rscp", 0.0] >= 1 - ALPHA - tol  # RSCP+: clean ...
    assert cov["rscp", 0.125] >= 1 - ALPHA - tol  # ... and under L2 PGD within its eps
    assert size["split", 0.0] < 2 and size["rscp", 0.125] < 5  # informative sets
    guaranteed = df.groupby(["probe", "level"])["x.guaranteed"].first()
    assert guaranteed.to_dict() == {
        ("rscp", 0.0): 1, ("rscp", 0.125): 1, ("split", 0.0): 1, ("split", 0.25): 0
    }  # fmt: skip


def test_split_sets_match_a_direct_computation(run: dict[str, Any]) -> None:
    data = datasets.create("digits", {"split": "test"})
    part = parts(data.ids, 0, "split", ConformalProbe())
    model = models.create("digits-cnn-noise", {"sigma": SIGMA})
    with torch.no_grad():
        probs = model.logits(data.x).softmax(1).numpy()
    y = data.y.numpy()
    cal, test = (part == 0).numpy(), (part == 2).numpy()
    s_cal = 1 - probs[cal, y[cal]]
    n = len(s_cal)  # Vovk et al.: the ceil((n + 1)(1 - alpha)) / n empirical quantile
    qhat = np.quantile(s_cal, math.ceil((n + 1) * (1 - ALPHA)) / n, method="inverted_cdf")
    ref = {int(i): np.flatnonzero(1 - p <= qhat + 1e-7).tolist()
           for i, p in zip(data.ids.numpy()[test], probs[test], strict=True)}  # fmt: skip
    g = run["df"][(run["df"]["probe"] == "split") & (run["df"]["level"] == 0)]
    ours = dict(zip(g["example_id"].astype(int), g["pred"].map(json.loads), strict=True))
    assert ours == ref


def test_shard_size_does_not_change_records(tmp_path: Path, run: dict[str, Any]) -> None:
    store = Store(tmp_path / "runs.db")
    df = store.records(run_suite(_suite(512, only="rscp"), store, progress=False))
    key = ["probe", "level", "example_id"]
    a = run["df"][run["df"]["probe"] == "rscp"].sort_values(key).reset_index(drop=True)
    b = df[df["kind"] == "conformal"].sort_values(key).reset_index(drop=True)
    cols = ["probe", "level", "example_id", "pred", "correct", "x.set_size"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_report_shows_coverage_and_set_size(run: dict[str, Any], tmp_path: Path) -> None:
    content = json.loads(run["json"].read_text())
    rows = content["extensions"]["conformal"]["data"]["rows"]
    cov = run["df"].groupby(["probe", "level"])["correct"].mean()
    for r in rows:
        assert r["coverage"] == pytest.approx(cov[r["probe"], r["eps"]])
        assert r["lo"] <= r["coverage"] <= r["hi"] and r["target"] == pytest.approx(1 - ALPHA)
        assert not r["violated"]
    assert "certification_curves" not in content["extensions"]
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(run["html"].resolve().as_uri())
            page.wait_for_load_state("load")
            heading = page.locator("#conformal h2").inner_text()
            box = page.locator("#conformal figure > svg").bounding_box()
            cells = page.locator("#conformal table").inner_text()
        finally:
            browser.close()
    assert errors == [] and heading == "Conformal prediction"
    assert box is not None and box["width"] > 300 and box["height"] > 150
    assert "rscp" in cells and "coverage" in cells


@pytest.mark.parametrize(
    ("name", "params", "norm", "match"),
    [
        ("rscpp", {}, "2", "did you mean 'rscp'"),
        ("rscp", {}, "inf", "norm: '2'"),
        ("split", {"alpha": 1.2}, "2", "alpha"),
        ("rscp-ptt", {"calibration_fraction": 0.6, "holdout_fraction": 0.4}, "2", "sum < 1"),
        ("split", {"calibraton_fraction": 0.5}, "2", "did you mean 'calibration_fraction'"),
        ("split", {"attack": "pgdd"}, "2", "pgd"),
        ("rscp", {"sigma": 0}, "2", "sigma"),
        ("rscp", {"alpha": 0.01, "beta": 0.01}, "2", "2 \\* beta"),
    ],
)
def test_bad_probe_is_refused_before_running(
    name: str, params: dict[str, Any], norm: str, match: str
) -> None:
    suite = Suite.parse(
        {
            "name": "bad",
            "models": [{"name": "digits-cnn"}],
            "data": {"name": "digits"},
            "probes": [
                {"kind": "conformal", "name": name, "params": params, "norm": norm, "levels": [0]}
            ],
        }  # fmt: skip
    )
    with pytest.raises(ConfigError, match=match):
        suite.validate_components()
