"""Every report section kind rendered in headless Chromium from a real run, checked on the DOM.

One small digits run carries the vision section kinds (transformations with severities and patch
fractions, L∞ / L2 / patch attacks, an evaluation set, slices, smoothing L2 and IBP/MILP L∞
certificates, conformal prediction, the verification sandwich); a certifier-only run checks the
summary's certified accuracy; ranking, code and FailSafeQA runs their own sections. Each page is
checked for unique section titles and nav anchors, axis labels that name the level's meaning and
norm (never two norms on one axis), budgets printed as ``k/255``, and no NaN.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from robustlab.report import build_report, write_report
from robustlab.report.format import level_text
from robustlab.report.html import render
from robustlab.report.levels import perturbation_axis
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

CHROMIUM = Path("/usr/bin/chromium")
VISION = """
name: report-sections
models: [{name: digits-mlp-ibp}]
data: {name: digits, params: {split: test, test_fraction: 0.05}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3]}
  - {kind: perturbation, name: patch_corruption, params: {patch_size: 2}, levels: [0.25, 0.5]}
  - {kind: attack, name: fgsm, levels: [0.00196078431372549, 0.03137254901960784, 0.05]}
  - {kind: attack, name: pgd, norm: "2", params: {steps: 3}, levels: [0.5, 1.0]}
  - {kind: attack, name: patch, params: {steps: 3}, levels: [0.1]}
  - {kind: certifier, name: smoothing, params: {n0: 16, n: 64}, levels: [0, 0.25]}
  - {kind: certifier, name: ibp, label: ibp-0.05, params: {eps: 0.05}, levels: [0.05]}
  - {kind: certifier, name: milp, label: milp-0.05, params: {eps: 0.05, time_limit: 2}, levels: [0.05]}
  - {kind: conformal, name: split, norm: "2", levels: [0, 0.25], params: {attack_params: {steps: 3}}}
  - {kind: evalset, name: digits-resplit, data: {name: digits, params: {test_fraction: 0.05, seed: 1}}}
slices: [{by: ink}]
"""
CERT_ONLY = """
name: certify-only
models: [{name: digits-mlp}]
data: {name: digits, params: {split: test, test_fraction: 0.05}}
probes:
  - {kind: certifier, name: smoothing, params: {n0: 16, n: 64}, levels: [0.125, 0.25]}
"""


def _run(root: Path, suite: str) -> dict[str, Any]:
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(suite), store, progress=False)
    html, js = write_report(store, run_id, root / "out")
    return {"store": store, "id": run_id, "html": html, "content": build_report(store, run_id)}


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("vision"), VISION)


@pytest.fixture(scope="module")
def cert_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("cert"), CERT_ONLY)


def _browse(html: Path, tmp_path: Path) -> dict[str, Any]:
    """The page as Chromium shows it: headings, nav links, section ids, figures' SVG text, tables."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            out = page.evaluate(
                """() => ({
                h2: [...document.querySelectorAll('section > h2')].map(h => h.innerText),
                ids: [...document.querySelectorAll('section')].map(s => s.id),
                nav: [...document.querySelectorAll('nav a')].map(a => [a.getAttribute('href'), a.innerText]),
                text: document.body.innerText,
                sections: Object.fromEntries([...document.querySelectorAll('section')].map(s => [
                  s.querySelector('h2').innerText,
                  {figures: [...s.querySelectorAll('figure svg')].map(f =>
                      [...f.querySelectorAll('text')].map(t => t.textContent.trim()).filter(t => t)),
                   h3: [...s.querySelectorAll('h3')].map(h => h.innerText),
                   tables: [...s.querySelectorAll('table')].map(t =>
                      [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim()))),
                   boxes: [...s.querySelectorAll('figure svg')].map(f => {
                      const b = f.getBoundingClientRect(); return [b.width, b.height]; })}]))
            })"""
            )
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    return out


def _check_page(page: dict[str, Any]) -> None:
    """What every report page must satisfy."""
    assert len(page["h2"]) == len(set(page["h2"])), page["h2"]  # unique section titles
    assert len(page["ids"]) == len(set(page["ids"])), page["ids"]  # unique anchors
    hrefs = [h for h, _ in page["nav"]]
    assert hrefs == [f"#{i}" for i in page["ids"]]  # one nav link per section, to its anchor
    assert [t for _, t in page["nav"]] == page["h2"]
    assert not re.search(r"\bnan\b", page["text"], re.IGNORECASE)
    for sec in page["sections"].values():
        assert all(w > 100 and h > 100 for w, h in sec["boxes"])
        for texts in sec["figures"]:
            assert not any(re.search(r"\bnan\b", t, re.IGNORECASE) for t in texts)


def _figure_with(sec: dict[str, Any], label: str) -> list[str]:
    (fig,) = [f for f in sec["figures"] if label in f]
    return fig


def _column(table: list[list[str]], head: str) -> list[str]:
    i = table[0].index(head)
    return [row[i] for row in table[1:]]


@pytest.mark.browser
def test_vision_sections_in_chromium(vision: dict[str, Any], tmp_path: Path) -> None:
    page = _browse(vision["html"], tmp_path)
    _check_page(page)
    secs = page["sections"]
    assert {"Summary", "Subpopulations (slices)", "Transformations", "Evaluation sets", "Attacks",
            "Certification", "Conformal prediction", "Verification sandwich",
            "All metrics"} <= set(secs)  # fmt: skip
    assert page["h2"].count("Certification") == 1

    # transformations: severities and patch fractions on their own axes
    patch = perturbation_axis("patch_corruption", {"patch_size": 2}).label
    assert patch != "severity"
    tr = secs["Transformations"]
    assert tr["h3"] == ["severity", patch] and len(tr["figures"]) == 2
    assert patch not in _figure_with(tr, "severity") and "severity" not in _figure_with(tr, patch)
    assert [t[0][2] for t in tr["tables"]] == ["severity", patch]

    # attacks: one plot per norm / threat, each axis naming it; budgets as k/255
    at = secs["Attacks"]
    labels = ["epsilon (L∞)", "epsilon (L2)", "patch area fraction"]
    assert at["h3"] == labels and len(at["figures"]) == 3
    for label in labels:
        fig = _figure_with(at, label)
        assert not [other for other in labels if other != label and other in fig]
    linf = _figure_with(at, "epsilon (L∞)")
    assert "8/255" in linf and "0.05" in linf  # tick labels at the levels, as in the tables
    (t_inf, t_2, t_patch) = at["tables"]
    assert _column(t_inf, "epsilon (L∞)") == ["0.5/255", "8/255", "0.05"]
    assert _column(t_2, "epsilon (L2)") == ["0.5", "1"] and t_patch[0][2] == "patch area fraction"
    assert "0.00196" not in page["text"]  # only in tooltips

    # certification: L2 (smoothing) and L∞ (IBP, MILP) radii never share an axis
    ce = secs["Certification"]
    assert ce["h3"] == ["radius (L2)", "radius (L∞)"]
    l2, li = _figure_with(ce, "radius (L2)"), _figure_with(ce, "radius (L∞)")
    assert "smoothing" in l2 and "ibp-0.05" not in l2 and "milp-0.05" not in l2
    assert {"ibp-0.05", "milp-0.05"} <= set(li) and "smoothing" not in li
    assert not any("L2 radius" in t for f in ce["figures"] for t in f)
    cert_rows = _column(ce["tables"][1], "certified accuracy [95% CI]")
    assert len(cert_rows) == 2 and all("%" in c for c in cert_rows)

    # summary: certified accuracy next to robust accuracy, budgets named
    su = secs["Summary"]
    models = su["tables"][0]
    assert (
        models[1][models[0].index("lowest certified accuracy")].endswith("L∞")
        or "L2" in (models[1][models[0].index("lowest certified accuracy")])
    )
    adv = next(t for t in su["tables"] if t[0][:3] == ["model", "attack", "budget"])
    assert "0.5/255 epsilon (L∞)" in _column(adv, "budget")
    assert "1 epsilon (L2)" in _column(adv, "budget")
    assert "0.1 patch area fraction" in _column(adv, "budget")

    # conformal and the verification sandwich name their levels too
    co = secs["Conformal prediction"]
    assert all(any(t == "attack epsilon (L2)" for t in f) for f in co["figures"])
    ve = secs["Verification sandwich"]
    (table,) = ve["tables"]
    assert table[0][1] == "epsilon (L∞)" and _column(table, "epsilon (L∞)") == ["0.05"]
    assert "fgsm" in table[1][4]  # the patch attack (not an L∞ ball) is no upper bound here


@pytest.mark.browser
def test_certifier_only_run_in_chromium(cert_only: dict[str, Any], tmp_path: Path) -> None:
    page = _browse(cert_only["html"], tmp_path)
    _check_page(page)
    su = page["sections"]["Summary"]
    head, row = su["tables"][0][0], su["tables"][0][1]
    cell = row[head.index("lowest certified accuracy")]
    rows = cert_only["content"]["summary"]["certified"]
    worst = min(rows, key=lambda r: r["accuracy"])
    assert cell.startswith(f"{100 * worst['accuracy']:.1f}%") and "smoothing@" in cell
    assert cell.endswith("L2")
    certified = next(t for t in su["tables"] if t[0][:3] == ["model", "certifier", "radius"])
    assert _column(certified, "radius") == ["0.125 radius (L2)", "0.25 radius (L2)"]
    assert page["h2"].count("Certification") == 1 and "Attacks" in page["h2"]


def test_unique_titles_by_construction(vision: dict[str, Any]) -> None:
    """A registered section whose title or key collides with another still gets its own heading
    and anchor."""
    content = vision["content"]
    content["extensions"]["conformal"]["title"] = "Attacks"
    content["extensions"]["verification"]["title"] = "certification"
    html = render(content)
    heads = re.findall(r"<h2>(.*?)</h2>", html)
    ids = re.findall(r'<section id="([^"]+)">', html)
    assert len(heads) == len(set(h.lower() for h in heads)) and len(ids) == len(set(ids))
    assert "Attacks (conformal)" in heads and "certification (verification)" in heads
    assert re.findall(r'<a href="#([^"]+)">', html) == ids


def test_registered_trained_model_shows_its_provenance(vision: dict[str, Any]) -> None:
    """``digits-mlp-ibp`` is a ``trained`` spec (trainer ``ibp``): the run stores its provenance
    and the report's Training provenance section lists it."""
    prov = vision["content"]["run"]["environment"]["training"]["digits-mlp-ibp#0"]
    assert prov["spec"]["trainer"]["name"] == "ibp" and prov["epochs_run"] == 30
    rows = vision["content"]["extensions"]["training"]["data"]["rows"]
    assert [r["model"] for r in rows] == ["digits-mlp-ibp#0"]
    assert rows[0]["trainer"].startswith("ibp(") and rows[0]["holdout_examples"] == 0


def test_registered_section_titles_are_distinct() -> None:
    from robustlab.core.registry import report_sections
    from robustlab.report.html import SECTIONS

    titles = [t for _, t in SECTIONS] + [s.title for _, s in report_sections.items()]
    assert len({t.casefold() for t in titles}) == len(titles), titles


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5 / 255, "0.5/255"), (8 / 255, "8/255"), (1 / 255, "1/255"), (0.1, "0.1"), (3, "3"),
     (0.05, "0.05"), (0, "0"), (1 / 3, "1/3"), (0.0039, "0.0039"), (0.123456789, "0.1235"),
     (-0.2, "-0.2"), (None, "–")],
)  # fmt: skip
def test_level_text(value: Any, text: str) -> None:
    assert level_text(value) == text


def test_markers_at_zero_are_not_clipped() -> None:
    """Data lines are drawn outside the axes' clip box, and the axes are padded around 0 and 1."""
    from robustlab.report import plots

    rows = [{"model": "m", "probe": "p", "level": lv, "accuracy": 0.0, "accuracy_lo": 0.0,
             "accuracy_hi": 0.0} for lv in (0.1, 0.2)]  # fmt: skip
    svg = plots.curves(rows, ["m"], {"m": 1.0}, "epsilon (L∞)", "t")
    lines = re.findall(
        r'<g id="line2d_\d+">\s*<path [^>]*?style="fill: none; stroke: #1f77b4[^>]*>', svg
    )
    assert lines and not any("clip-path" in g for g in lines)


RANKING = """
name: ranking-sections
task: {name: ranking, params: {k: 10, recall_k: 20}}
models: [{name: bm25}]
data: {name: bbc-known-item, params: {split: test, n_queries: 8, max_docs: 120, candidates: 20}}
probes:
  - {kind: perturbation, name: typo, levels: [0.5]}
  - {kind: evalset, name: other-domain, data: {name: bbc-known-item, params: {split: test, n_queries: 8, max_docs: 120, candidates: 20, domain: shift}}}
  - {kind: attack, name: query-attack, levels: [2]}
  - {kind: attack, name: doc-attack, params: {target_rank: 15, max_words: 4}, levels: [2]}
"""
RAG = """
name: failsafe-sections
task: {name: rag, params: {match: contains, judge: rule}}
models: [{name: rag, label: bm25-cloze, params: {retriever: bm25, reader: cloze-reader, k: 2}}]
data: {name: bbc-qa, params: {n: 8}}
probes:
  - {kind: perturbation, name: query_misspelled, levels: [0.2]}
  - {kind: perturbation, name: context_missing, levels: [1.0]}
  - {kind: attack, name: garag, params: {population: 4, generations: 2}, levels: [0.1]}
metrics: [accuracy, answer_compliance, context_grounding]
"""


@pytest.mark.browser
@pytest.mark.parametrize(
    ("suite", "section"),
    [(RANKING, "Ranking robustness (S1: five tasks)"),
     (RAG, "FailSafeQA: robustness, context grounding, compliance (S37)")],
    ids=["ranking", "failsafe"],
)  # fmt: skip
def test_domain_sections_in_chromium(suite: str, section: str, tmp_path: Path) -> None:
    run = _run(tmp_path, suite)
    page = _browse(run["html"], tmp_path)
    _check_page(page)
    assert section in page["h2"]
    # every probe level on a plot axis or in a column is named by its meaning
    for name in ("Transformations", "Attacks"):
        sec = page["sections"][name]
        for h3, fig, tab in zip(sec["h3"], sec["figures"], sec["tables"], strict=True):
            assert h3 in fig and tab[0][2] == h3 and h3 not in ("level", "epsilon")


@pytest.mark.browser
def test_code_section_in_chromium(tmp_path: Path) -> None:
    import re as _re

    from robustlab.code.problems import load_humaneval
    from robustlab.core.registry import models
    from robustlab.models import CallableGenerator

    sols = {p["entry_point"]: p["canonical_solution"] for p in load_humaneval()}

    def oracle(prompts: list[str]) -> list[str]:
        """Canonical solutions, found by the last function the prompt defines (a perfect model)."""
        return [sols.get(_re.findall(r"def (\w+)\(", p)[-1], "    pass\n") for p in prompts]

    if "report-code-oracle" not in models:
        models.register("report-code-oracle")(lambda: CallableGenerator(oracle, version="o-v1"))
    suite = """
name: code-sections
task: {name: code-generation, params: {timeout: 10.0}}
models: [{name: report-code-oracle}]
data: {name: humaneval, params: {limit: 4}}
probes:
  - {kind: perturbation, name: doc_synonym_substitution, levels: [1]}
  - {kind: perturbation, name: format_newline_insertion, levels: [1]}
"""
    run = _run(tmp_path, suite)
    page = _browse(run["html"], tmp_path)
    _check_page(page)
    assert "Code generation robustness (ReCode)" in page["h2"]


TRAINED = """
name: trained-sections
models:
  - name: trained
    label: fgsm-rs
    params:
      base: {name: small-cnn, params: {side: 8}}
      data: {name: digits, params: {split: train}}
      trainer: {name: fgsm-rs, params: {eps: 0.1, lr: 0.003}}
      epochs: 3
      holdout: 128
      eval_eps: 0.1
data: {name: digits, params: {split: test, test_fraction: 0.05}}
probes:
  - {kind: attack, name: pgd, params: {steps: 5}, levels: [0.1]}
"""


@pytest.mark.browser
def test_training_section_in_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))  # trained here, 3 epochs
    run = _run(tmp_path, TRAINED)
    page = _browse(run["html"], tmp_path)
    _check_page(page)
    sec = page["sections"]["Training provenance"]
    (fig,) = sec["figures"]
    assert {"epoch", "held-out clean", "held-out FGSM", "held-out PGD"} <= set(fig)
    (tab,) = sec["tables"]
    assert _column(tab, "model") == ["fgsm-rs#0"] and _column(tab, "epochs") == ["3"]
    assert _column(tab, "trainer")[0].startswith("fgsm-rs(") and "eps=0.1" in tab[1][1]
    history = run["content"]["run"]["environment"]["training"]["fgsm-rs#0"]["history"]
    assert _column(tab, "held-out PGD") == [f"{100 * history[-1]['pgd_acc']:.1f}%"]


MASKING = """
name: masking-sections
models: [{name: digits-cnn}]
data: {name: digits, params: {split: test, test_fraction: 0.05}}
probes:
  - {kind: attack, name: fgsm, levels: [0.1, 0.5]}
  - {kind: attack, name: pgd, params: {steps: 5}, levels: [0.1, 0.5]}
  - {kind: attack, name: square, params: {n_queries: 100}, levels: [0.1]}
  - {kind: attack, name: transfer, params: {source: {name: digits-cnn, params: {seed: 1, epochs: 3}}},
     levels: [0.1]}
"""


@pytest.mark.browser
def test_masking_section_in_chromium(tmp_path: Path) -> None:
    run = _run(tmp_path, MASKING)
    page = _browse(run["html"], tmp_path)
    _check_page(page)
    (tab,) = page["sections"]["Gradient-masking checks"]["tables"]
    assert tab[0] == ["model", "norm", "check", "epsilon", "measured", "verdict"]
    assert set(_column(tab, "verdict")) == {"ok"}
    assert "0.5" in _column(tab, "epsilon")  # the unbounded-epsilon check ran at half the range
