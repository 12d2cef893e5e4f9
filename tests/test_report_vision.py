"""The report's vision analyses (issue 21) on one real digits run with three cached models, each
checked against an independent computation from the records or from the models themselves:

* mCE / relative mCE: Hendrycks & Dietterich's formulas by hand over the error per severity;
* power law: ``scipy.stats.linregress`` in log-log space on the success rates counted by hand;
* logit margins: the models' own logits recomputed on the test images, and numpy quantiles;
* effective robustness: ``np.polyfit`` on ``scipy.special.logit`` of accuracies counted by hand;
* certified vs empirical: IBP-certified accuracy <= the per-example worst attack at every shared
  epsilon, both counted from the records;
* ensemble breakdown: the examples the first member (FGSM) broke are exactly those the run's own
  FGSM probe breaks at that epsilon (FGSM is deterministic), and the counts add up.

The rendered HTML carries the numbers, and the page opens cleanly in Chromium (slow, browser).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from robustlab.core.registry import report_sections
from robustlab.report import write_report
from robustlab.report.format import num, pct, pp
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ["digits-mlp", "digits-mlp-ibp", "digits-cnn-ibp"]
SUITE = """
name: report-vision
models: [{name: digits-mlp}, {name: digits-mlp-ibp}, {name: digits-cnn-ibp}]
data: {name: digits, params: {split: test, test_fraction: 0.1}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3]}
  - {kind: perturbation, name: contrast, levels: [1, 3]}
  - {kind: attack, name: fgsm, levels: [0.02, 0.05, 0.1]}
  - {kind: attack, name: pgd, params: {steps: 5}, levels: [0.02, 0.05, 0.1]}
  - {kind: attack, name: autoattack, params: {attacks: [fgsm, {name: pgd, steps: 5}]}, levels: [0.1]}
  - {kind: certifier, name: ibp, label: ibp-0.05, params: {eps: 0.05}, levels: [0.05], models: [digits-mlp-ibp, digits-cnn-ibp]}
  - {kind: certifier, name: ibp, label: ibp-0.1, params: {eps: 0.1}, levels: [0.1], models: [digits-mlp-ibp, digits-cnn-ibp]}
  - {kind: evalset, name: digits-resplit, data: {name: digits, params: {test_fraction: 0.1, seed: 1}}}
"""
SECTIONS = ["mce", "power_law", "logit_margins", "effective_robustness",
            "certified_vs_empirical", "ensemble_breakdown"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("vision")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    html, js = write_report(store, run_id, root / "out")
    content = json.loads(js.read_text())
    return {"store": store, "id": run_id, "html": html, "text": html.read_text(),
            "ext": content["extensions"], "df": store.records(run_id),
            "info": store.run_info(run_id)}  # fmt: skip


def _err(df: pd.DataFrame) -> float:
    return 1.0 - float(df["correct"].fillna(0.0).mean())


def test_every_vision_section_is_in_the_report(run: dict[str, Any]) -> None:
    assert set(SECTIONS) <= set(run["ext"])
    for key in SECTIONS:
        assert f"<h2>{report_sections.get(key).title}</h2>".replace("&", "&amp;") in run["text"]


def test_mce_matches_the_formula_by_hand(run: dict[str, Any]) -> None:
    df, data = run["df"], run["ext"]["mce"]["data"]
    assert data["baseline"] == MODELS[0]  # the suite's first model
    pert, clean = df[df["kind"] == "perturbation"], df[df["kind"] == "clean"]

    def errors(m: str) -> dict[tuple[str, float], float]:
        g = pert[pert["model"] == m]
        return {(p, lv): _err(h) for (p, lv), h in g.groupby(["probe", "level"])}

    base, e_base = errors(MODELS[0]), _err(clean[clean["model"] == MODELS[0]])
    rows = {r["model"]: r for r in data["rows"]}
    assert list(rows) == MODELS
    for m in MODELS:
        mine, e_clean = errors(m), _err(clean[clean["model"] == m])
        ces, rels = [], []
        for c in ("contrast", "gaussian_noise"):
            lv = [k for k in mine if k[0] == c]
            ce = sum(mine[k] for k in lv) / sum(base[k] for k in lv)
            rel = sum(mine[k] - e_clean for k in lv) / sum(base[k] - e_base for k in lv)
            assert rows[m]["ce"][c] == pytest.approx(ce, rel=1e-12)
            assert rows[m]["rel_ce"][c] == pytest.approx(rel, rel=1e-12)
            ces.append(ce)
            rels.append(rel)
        assert rows[m]["mce"] == pytest.approx(np.mean(ces), rel=1e-12)
        assert rows[m]["relative_mce"] == pytest.approx(np.mean(rels), rel=1e-12)
        assert rows[m]["clean_error"] == pytest.approx(e_clean)
        assert pct(rows[m]["mce"]) in run["text"] and pct(rows[m]["relative_mce"]) in run["text"]
    assert rows[MODELS[0]]["mce"] == rows[MODELS[0]]["relative_mce"] == 1.0


def test_power_law_matches_linregress_in_log_space(run: dict[str, Any]) -> None:
    df, rows = run["df"], run["ext"]["power_law"]["data"]["rows"]
    att = df[df["kind"] == "attack"]
    # every model x Lp attack with 2+ levels; autoattack has one level: no fit
    assert {(r["model"], r["probe"]) for r in rows} == {
        (m, p) for m in MODELS for p in ("fgsm", "pgd")
    }
    for r in rows:
        g = att[(att["model"] == r["model"]) & (att["probe"] == r["probe"])]
        ok = g[g["x.clean_correct"] == 1]  # success rate on correctly classified examples
        eps = np.array(sorted(ok["level"].unique()))
        err = np.array([ok[ok["level"] == e]["x.success"].mean() for e in eps])
        keep = err > 0
        ref = stats.linregress(np.log(eps[keep]), np.log(err[keep]))
        assert r["eps"] == pytest.approx(eps.tolist()) and r["error"] == pytest.approx(err.tolist())
        assert r["n"] == int(keep.sum()) >= 2
        assert r["exponent"] == pytest.approx(ref.slope, rel=1e-9)
        assert r["coef"] == pytest.approx(np.exp(ref.intercept), rel=1e-9)
        assert r["r2"] == pytest.approx(ref.rvalue**2, rel=1e-9)
        assert f"<td class=num>{num(r['exponent'], 3)}</td>" in run["text"]
    assert "adversarial error, log scale" in run["text"]


def test_margins_are_the_models_logit_margins(run: dict[str, Any]) -> None:
    import torch

    from robustlab.core.registry import datasets, models

    df = run["df"]
    att = df[df["kind"] == "attack"]
    data = datasets.get("digits")(split="test", test_fraction=0.1)
    for m in MODELS:
        with torch.no_grad():
            z = models.create(m).logits(data.x).double().numpy()
        y = data.y.numpy()
        true = z[np.arange(len(y)), y]
        z[np.arange(len(y)), y] = -np.inf
        ref = pd.Series(true - z.max(axis=1), index=data.ids.numpy())
        g = att[(att["model"] == m) & (att["probe"] == "pgd") & (att["level"] == 0.1)]
        got = g.set_index("example_id")["x.clean_margin"]
        assert np.abs(got - ref[got.index]).max() <= 5.1e-5  # stored rounded to 4 decimals
        # under attack: a negative margin is a misclassification
        adv = g["x.margin"].to_numpy(float)
        clear = np.abs(adv) > 1e-3
        assert ((adv < 0) == (g["correct"] == 0).to_numpy())[clear].all()
    # the section's statistics are numpy's over the records
    for r in run["ext"]["logit_margins"]["data"]["rows"]:
        g = att[(att["model"] == r["model"]) & (att["probe"] == r["probe"])]
        g = g[g["level"] == r["level"]]
        for key, col in (("clean", "x.clean_margin"), ("attacked", "x.margin")):
            v = g[col].to_numpy(float)
            q10, q25, med, q75, q90 = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
            s = r[key]
            assert (s["q10"], s["q25"], s["median"], s["q75"], s["q90"]) == pytest.approx(
                (q10, q25, med, q75, q90)
            )
            assert s["mean"] == pytest.approx(v.mean()) and s["negative"] == (v < 0).mean()
            assert f"<td class=num>{num(s['median'])}</td>" in run["text"]
    # clean and perturbation records are unchanged: no margin in their extras
    raw = run["store"].records(run["id"], expand=False)
    assert (raw.loc[raw["kind"].isin(["clean", "perturbation"]), "extra"] == "{}").all()


def test_effective_robustness_matches_polyfit_on_scipy_logits(run: dict[str, Any]) -> None:
    df, panels = run["df"], run["ext"]["effective_robustness"]["data"]["panels"]
    clean, pert = df[df["kind"] == "clean"], df[df["kind"] == "perturbation"]
    ood = {
        "digits-resplit": {m: 1 - _err(g) for m, g in
                           df[df["probe"] == "digits-resplit"].groupby("model")},
        "perturbations (mean)": {m: 1 - _err(g) for m, g in pert.groupby("model")},
    }  # fmt: skip
    assert [p["condition"] for p in panels] == list(ood)
    for p in panels:
        ident = np.array([1 - _err(clean[clean["model"] == m]) for m in MODELS])
        o = np.array([ood[p["condition"]][m] for m in MODELS])

        def lg(a: np.ndarray) -> np.ndarray:
            return special.logit(np.clip(a, 1e-6, 1 - 1e-6))  # the documented clip

        slope, icept = np.polyfit(lg(ident), lg(o), 1)
        er = o - special.expit(slope * lg(ident) + icept)
        assert [r["model"] for r in p["rows"]] == MODELS
        assert [r["id"] for r in p["rows"]] == pytest.approx(ident.tolist())
        assert [r["ood"] for r in p["rows"]] == pytest.approx(o.tolist())
        assert (p["slope"], p["intercept"]) == pytest.approx((slope, icept), rel=1e-9)
        got = [r["effective_robustness"] for r in p["rows"]]
        assert got == pytest.approx(er.tolist(), abs=1e-12)
        assert all(pp(v, True) in run["text"] for v in got)
        assert [r["relative_drop"] for r in p["rows"]] == pytest.approx(
            ((ident - o) / ident).tolist()
        )
    assert "ID accuracy (clean)" in run["text"]


def test_certified_accuracy_is_below_empirical_at_every_shared_epsilon(run: dict[str, Any]) -> None:
    df = run["df"]
    (norm,) = run["ext"]["certified_vs_empirical"]["data"]["norms"]
    assert norm["norm"] == "inf"
    panels = {p["model"]: p for p in norm["panels"]}
    assert sorted(panels) == sorted(["digits-mlp-ibp", "digits-cnn-ibp"])  # the certified ones
    att = df[df["kind"] == "attack"]
    for model, p in panels.items():
        checks = {c["eps"]: c for c in p["checks"]}
        assert sorted(checks) == [0.05, 0.1]  # every epsilon both sides have
        for eps, c in checks.items():
            a = att[(att["model"] == model) & (att["level"] == eps)]
            worst = a.assign(c=a["correct"].fillna(0)).groupby("example_id")["c"].min().mean()
            k = df[(df["model"] == model) & (df["kind"] == "certifier") & (df["level"] == eps)]
            certified = k["correct"].mean()
            assert c["empirical"] == pytest.approx(worst) and c["certified"] == pytest.approx(
                certified
            )
            assert certified <= worst and c["ok"]
            assert f"{pct(certified)} ({c['certifier']})" in run["text"]
            # and below each attack's own accuracy
            assert all(certified <= g["correct"].mean() for _, g in a.groupby("probe"))
    assert "VIOLATED" not in run["text"] and "epsilon / radius (L∞)" in run["text"]


def test_ensemble_breakdown_matches_fgsm_alone(run: dict[str, Any]) -> None:
    df, rows = run["df"], run["ext"]["ensemble_breakdown"]["data"]["rows"]
    assert {r["model"] for r in rows} == set(MODELS)
    for r in rows:
        assert r["members"] == ["fgsm", "pgd"]
        assert r["clean_wrong"] + sum(r["broken"]) + r["robust"] + r["failed"] == r["n"] == 180
        g = df[(df["model"] == r["model"]) & (df["probe"] == "autoattack")]
        fg = df[(df["model"] == r["model"]) & (df["probe"] == "fgsm") & (df["level"] == 0.1)]
        by_fgsm = set(fg[(fg["x.clean_correct"] == 1) & (fg["x.success"] == 1)]["example_id"])
        assert set(g[g["x.member"] == 0]["example_id"]) == by_fgsm
        assert r["broken"][0] == len(by_fgsm)
        assert r["robust"] == int((g["correct"] == 1).sum())  # accuracy under the ensemble
        assert f"{r['broken'][1]} ({pct(r['broken'][1] / 180)})" in run["text"]


def test_sections_are_omitted_without_their_data(run: dict[str, Any]) -> None:
    df, info = run["df"], run["info"]
    one = df[(df["model"] == MODELS[0]) & df["kind"].isin(["clean", "perturbation"])]
    for key in SECTIONS:
        assert report_sections.get(key)().build(one, info) is None, key
    two = df[df["model"].isin(MODELS[:2])]  # two models: no trend to fit
    assert report_sections.get("effective_robustness")().build(two, info) is None
    no_cert = df[df["kind"] != "certifier"]
    assert report_sections.get("certified_vs_empirical")().build(no_cert, info) is None
    old = df.drop(columns=["x.margin", "x.clean_margin", "x.member"])  # records of older runs
    assert report_sections.get("logit_margins")().build(old, info) is None
    assert report_sections.get("ensemble_breakdown")().build(old, info) is None


@pytest.mark.slow  # Chromium's start-up: ~15 s on the loaded 2-core machine
@pytest.mark.browser
def test_vision_sections_open_cleanly_in_chromium(run: dict[str, Any], tmp_path: Path) -> None:
    from test_report_sections import _browse, _check_page

    page = _browse(run["html"], tmp_path)
    _check_page(page)
    secs = page["sections"]
    titles = [report_sections.get(k).title for k in SECTIONS]
    assert set(titles) <= set(secs)
    assert len(secs["Adversarial error power law (S34)"]["figures"]) == 1
    assert len(secs["Certified vs empirical robustness"]["figures"]) == 1  # one norm: L∞
    er = secs["Effective robustness (S19/S25)"]
    assert any("ID accuracy (clean)" in f for f in er["figures"])
    mce_table = secs["Corruption error (mCE)"]["tables"][0]
    assert mce_table[1][0] == f"{MODELS[0]} (baseline)" and mce_table[1][3] == "100.0%"
