"""The run report (HTML + JSON): numbers checked against records, rendering checked in Chromium."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from robustlab.report import build_report, write_report
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

SUITE = """
name: report-test
models:
  - {name: digits-mlp, replicates: [0, 1]}
  - {name: digits-cnn, replicates: [0]}
data: {name: digits, params: {split: test}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3]}
  - {kind: perturbation, name: contrast, levels: [1, 3]}
  - {kind: attack, name: fgsm, levels: [0.05, 0.1]}
  - {kind: attack, name: pgd, params: {steps: 3}, levels: [0.05, 0.1]}
  - {kind: evalset, name: digits-resplit, data: {name: digits, params: {test_fraction: 0.1, seed: 1}}}
slices:
  - {by: label}
  - {name: heavy-0-1, where: {ink: [heavy], label: [0, 1]}}
metrics: [accuracy, attack_success_rate, mean_queries, failure_rate]
"""

SECTIONS = [
    "Summary",
    "Leaderboard",  # the run has two models
    "Subpopulations (slices)",
    "Transformations",
    "Evaluation sets",
    "Attacks",
    "Examples (worst first)",
    "Logit margins (S34)",  # attack records carry the margins
    "Gradient-masking checks",  # the checks that can run on its attacks; the rest say what to add
    "Corruption error (mCE)",  # two models with corruptions
    "Adversarial error power law (S34)",  # attacks at two epsilons
    "All metrics",
]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    html, js = write_report(store, run_id, root / "out")
    return {"store": store, "id": run_id, "html": html, "json": js, "df": store.records(run_id)}


def _strict(text: str) -> Any:
    def bad(c: str) -> None:
        raise AssertionError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=bad)


def _acc(df: pd.DataFrame | pd.Series) -> float:
    """Accuracy computed directly: failed examples (NaN) count as wrong."""
    col = df if isinstance(df, pd.Series) else df["correct"]
    return float(col.fillna(0.0).mean())


def _one(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, len(hits))
    return hits[0]


def test_files_and_header(run: dict[str, Any]) -> None:
    assert run["html"].name == f"{run['id']}.html" and run["json"].name == f"{run['id']}.json"
    content = _strict(run["json"].read_text())
    assert content == _strict(json.dumps(build_report(run["store"], run["id"])))
    head = content["run"]
    assert head["id"] == run["id"] and head["suite"] == "report-test"
    assert head["status"] == "complete" and head["seed"] == 0
    assert head["n_records"] == len(run["df"]) and head["n_failing_examples"] == 0
    assert set(head["fingerprints"]) == {"digits-mlp#0", "digits-mlp#1", "digits-cnn#0"}
    assert head["environment"]["packages"]["torch"] and head["failed_units"] == []
    assert content["models"] == ["digits-mlp", "digits-cnn"]


def test_summary_matches_records(run: dict[str, Any]) -> None:
    c, df = _strict(run["json"].read_text()), run["df"]
    clean = df[df["kind"] == "clean"]
    for model in ("digits-mlp", "digits-cnn"):
        m = clean[clean["model"] == model]
        row = _one(c["summary"]["iid"], model=model)
        assert row["accuracy"] == pytest.approx(_acc(m))
        assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]
        assert row["n"] == len(m)
        per_seed = m.groupby("replicate")["correct"].mean()
        for rep, value in per_seed.items():
            assert _one(c["summary"]["replicates"], model=model, replicate=rep)["accuracy"] == (
                pytest.approx(value)
            )
        if len(per_seed) > 1:
            assert row["accuracy_std"] == pytest.approx(per_seed.std(ddof=1))
        else:
            assert row["accuracy_std"] is None  # one seed: no spread (NaN -> null)
        # OOD: worst and mean drop relative to clean over perturbation levels
        pert = df[(df["kind"] == "perturbation") & (df["model"] == model)]
        drops = _acc(m) - pert.groupby(["probe", "level"])["correct"].apply(_acc)
        ood = _one(c["summary"]["ood"], model=model, kind="perturbation")
        assert ood["conditions"] == 4
        assert ood["mean_drop"] == pytest.approx(drops.mean())
        assert ood["worst_drop"] == pytest.approx(drops.max())
        assert ood["worst"] == "{}@{:g}".format(*drops.idxmax())
        summary = _one(c["summary"]["models"], model=model)
        assert summary["clean_accuracy"] == pytest.approx(_acc(m))
        assert summary["replicates"] == m["replicate"].nunique()


def test_sections_match_records(run: dict[str, Any]) -> None:
    c, df = _strict(run["json"].read_text()), run["df"]
    s = c["sections"]
    # transformations: accuracy per (model, corruption, severity)
    assert len(s["transformations"]["rows"]) == 2 * 2 * 2
    for r in s["transformations"]["rows"]:
        g = df[
            (df["model"] == r["model"]) & (df["probe"] == r["probe"]) & (df["level"] == r["level"])
        ]
        assert r["accuracy"] == pytest.approx(_acc(g)) and r["n"] == len(g)
        assert r["drop"] == pytest.approx(r["clean_accuracy"] - r["accuracy"])
    # attacks: robust accuracy, success rate on clean-correct examples, queries, distance
    assert len(s["attacks"]["rows"]) == 2 * 2 * 2
    for r in s["attacks"]["rows"]:
        g = df[
            (df["model"] == r["model"]) & (df["probe"] == r["probe"]) & (df["level"] == r["level"])
        ]
        ok = g[g["x.clean_correct"] == 1]
        assert r["accuracy"] == pytest.approx(_acc(g))
        assert r["attack_success_rate"] == pytest.approx(ok["x.success"].mean())
        assert r["mean_queries"] == pytest.approx(g["x.queries"].mean())
        assert r["median_distance"] == pytest.approx(
            g.loc[g["x.success"] == 1, "x.distance"].median()
        )
        assert r["median_distance"] <= r["level"] + 1e-6  # L-inf ball
    # evaluation sets
    for r in s["evaluation_sets"]["rows"]:
        g = df[(df["model"] == r["model"]) & (df["kind"] == "evalset")]
        assert r["probe"] == "digits-resplit" and r["accuracy"] == pytest.approx(_acc(g))
    assert s["certifiers"]["rows"] == []


def test_slices_match_records(run: dict[str, Any]) -> None:
    c, df = _strict(run["json"].read_text()), run["df"]
    sec = c["sections"]["slices"]
    assert sec["notes"] == []
    clean = df[(df["kind"] == "clean") & (df["model"] == "digits-mlp")]
    for digit in range(10):
        r = _one(sec["rows"], model="digits-mlp", slice=f"label={digit}", probe="clean")
        g = clean[clean["m.label"].astype(str) == str(digit)]
        assert r["accuracy"] == pytest.approx(_acc(g)) and r["n"] == len(g)
    r = _one(sec["rows"], model="digits-mlp", slice="heavy-0-1", probe="clean")
    g = clean[(clean["m.ink"] == "heavy") & clean["m.label"].isin(["0", "1"])]
    assert len(g) > 0 and r["n"] == len(g) and r["accuracy"] == pytest.approx(_acc(g))
    # one worst level per (model, probe), and it is the level with the lowest accuracy
    worst = sec["worst_levels"]
    assert len(worst) == 2 * 5
    for w in worst:
        g = df[(df["model"] == w["model"]) & (df["probe"] == w["probe"])]
        assert w["level"] == g.groupby("level")["correct"].apply(_acc).idxmin()
        r = _one(sec["rows"], model=w["model"], slice="label=3", probe=w["probe"])
        sub = g[(g["level"] == w["level"]) & (g["m.label"].astype(str) == "3")]
        assert r["level"] == w["level"] and r["accuracy"] == pytest.approx(_acc(sub))


def test_html_is_self_contained(run: dict[str, Any]) -> None:
    text = run["html"].read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")
    assert "https://" not in text
    # the only sources are inline (example images are PNG data: URIs)
    assert re.findall(r'src="(?!data:image/png;base64,)', text) == []
    for title in SECTIONS:
        assert f">{title}</h2>" in text
    # slices, transformations, evaluation sets, attacks; logit margins and the power law (one norm)
    assert text.count("<svg") == 6
    assert "No certifiers in this run." in text


def test_empty_sections_and_failures(tmp_path: Path) -> None:
    """A run with failed units and failing examples, and no probes: every section says so."""
    store = Store(tmp_path / "runs.db")
    suite = {"name": "hand", "models": [{"name": "m"}], "data": {"name": "d"}}
    run_id = store.create_run("hand", "h", json.dumps(suite), 3, 2, {"python": "3"}, {"m#0": "ab"})
    rows = [
        {"model": "m", "replicate": 0, "probe": "clean", "kind": "clean", "level": 0.0,
         "example_id": i, "label": "1", "pred": None if i == 0 else "1",
         "correct": math.nan if i == 0 else float(i % 2), "error": "boom <b>" if i == 0 else None,
         "extra": "{}", "meta": "{}"}
        for i in range(6)
    ]  # fmt: skip
    store.write_unit(run_id, "k1", "m#0 clean shard 0", rows, 0.1)
    store.write_unit(run_id, "k2", "m#0 clean shard 1", [], 0.1, error="RuntimeError: <oops>")
    store.finish_run(run_id, "failed", "1 unit failed")
    html, js = write_report(store, run_id, tmp_path)
    c = _strict(js.read_text())
    assert c["run"]["failed_units"] == [
        {"unit": "m#0 clean shard 1", "error": "RuntimeError: <oops>"}
    ]
    assert c["run"]["n_failing_examples"] == 1 and c["run"]["errors"][0]["error"] == "boom <b>"
    assert c["summary"]["iid"][0]["accuracy"] == pytest.approx(3 / 6)  # failed example = wrong
    text = html.read_text()
    assert "RuntimeError: &lt;oops&gt;" in text and "boom &lt;b&gt;" in text  # escaped
    for line in (
        "No perturbations",
        "No attacks",
        "No evaluation sets",
        "No certifiers",
        "No slice data",
    ):
        assert line in text
    assert "<svg" not in text


@pytest.mark.browser
def test_html_in_chromium(run: dict[str, Any], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(run["html"].resolve().as_uri())
            page.wait_for_load_state("load")
            headings = page.locator("h2").all_inner_texts()
            svgs = page.locator("figure > svg")
            boxes = [svgs.nth(i).bounding_box() for i in range(svgs.count())]
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
    assert headings == SECTIONS
    assert len(boxes) == 6  # + logit margins and power law (one norm each)
    assert all(b is not None and b["width"] > 100 and b["height"] > 100 for b in boxes)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_run_without_records(tmp_path: Path) -> None:
    """Every unit failed: the report still renders, and a slice on absent metadata is noted."""
    store = Store(tmp_path / "runs.db")
    suite = {"name": "e", "models": [{"name": "m"}], "data": {"name": "d"},
             "slices": [{"by": "label"}]}  # fmt: skip
    run_id = store.create_run("e", "h", json.dumps(suite), 0, 1, {}, {})
    store.write_unit(run_id, "k", "m#0 clean shard 0", [], 0.0, error="boom")
    html, js = write_report(store, run_id, tmp_path / "out")
    c = _strict(js.read_text())
    assert c["run"]["n_records"] == 0 and c["summary"]["iid"] == []
    assert c["sections"]["slices"]["notes"] == [
        "slice by 'label': the records have no metadata column 'label'"
    ]
    text = html.read_text()
    assert "No clean records in this run." in text and "no metadata column" in text
