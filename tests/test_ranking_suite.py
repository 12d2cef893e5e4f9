"""The five S1 tasks as suite probes through the runner, and the S1 report section."""

from __future__ import annotations

import numpy as np
import pytest

from robustlab.core.errors import ConfigError
from robustlab.report.build import build_report
from robustlab.report.html import render
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

DATA = "{split: test, n_queries: 12, max_docs: 200, candidates: 20"
SUITE = f"""
name: ranking-mini
task: {{name: ranking, params: {{k: 10, recall_k: 20}}}}
models: [{{name: bm25}}, {{name: ltr, replicates: [0, 1], params: {{n_queries: 150, n_estimators: 30}}}}]
data: {{name: bbc-known-item, params: {DATA}}}}}
probes:
  - {{kind: perturbation, name: typo, levels: [0.5]}}
  - {{kind: evalset, name: lead, data: {{name: bbc-known-item, params: {DATA}, query: lead}}}}}}
  - {{kind: evalset, name: other-domain, data: {{name: bbc-known-item, params: {DATA}, domain: shift}}}}}}
  - {{kind: attack, name: query-attack, levels: [2]}}
  - {{kind: attack, name: doc-attack, params: {{target_rank: 15, max_words: 4}}, levels: [2]}}
metrics: [mrr, ndcg, recall, map, attack_success_rate, rank_change, mean_queries]
"""


def test_s1_tasks_through_the_runner_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))
    store = Store(tmp_path / "s.db")
    # a white-box attack on black-box rankers only would record nothing but errors: refused
    # before any unit runs (restrict it to white-box rankers with `models: [...]`)
    white_box = SUITE.replace(
        "metrics:", "  - {kind: attack, name: hotflip-doc, levels: [2]}\nmetrics:"
    )
    with pytest.raises(ConfigError, match="'hotflip-doc' needs input gradients, but model 'bm25'"):
        run_suite(Suite.from_yaml(white_box), store, progress=False)
    assert store.runs().empty
    run = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    df = store.records(run)
    clean = df[(df.kind == "clean") & (df.model == "bm25")]
    assert clean.error.isna().all() and len(clean) == 12
    content = build_report(store, run)
    rows = {r["model"]: r for r in content["extensions"]["ranking"]["data"]["rows"]}
    assert rows["bm25"]["iid"] == pytest.approx(clean.correct.mean())
    assert rows["ltr"]["seed_sd"] is not None  # two training seeds -> a spread
    lead = df[(df.probe == "lead") & (df.model == "bm25")].correct.mean()
    typo = df[(df.probe == "typo") & (df.model == "bm25")].correct.mean()
    base = clean.correct.mean()
    assert rows["bm25"]["ood_query"] == pytest.approx(np.mean([(base - lead) / base,
                                                               (base - typo) / base]))  # fmt: skip
    assert set(rows["bm25"]["adv_doc"]) == {"doc-attack"}
    assert set(rows["bm25"]["adv_query"]) == {"query-attack"}
    assert rows["bm25"]["adv_doc"]["doc-attack"]["asr"] > 0.5
    html = render(content)
    assert "Ranking robustness (S1: five tasks)" in html and "5 doc attack: success" in html
