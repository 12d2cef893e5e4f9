"""Ranking: BBC collection, TREC loaders, BM25 vs rank-bm25, metrics vs ir-measures/pytrec_eval,
the ranking task's records and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models, tasks
from robustlab.metrics.ranking import rank_metrics, relative_drop
from robustlab.models.rankers.index import tokenize


@pytest.fixture(scope="module")
def bbc():
    return datasets.create("bbc-known-item", {"split": "test", "n_queries": 60})


def test_bbc_construction(bbc):
    from robustlab.data.ranking.bbc import articles

    arts = {a["key"]: a for a in articles()}
    e, rel = bbc.x[0], bbc.y[0]
    a = arts[e["qid"]]
    assert e["query"] == a["headline"] and e["n_rel"] == 1
    # the headline and the lead sentence are removed from the relevant document
    assert a["doc"] in e["docs"] and a["headline"] not in a["doc"] and a["lead"] not in a["doc"]
    assert rel[e["doc_ids"].index(e["qid"])] == 1.0 and sum(rel) == 1.0
    assert len(e["docs"]) == 100 and bbc.meta["category"][0] in ("business", "politics", "tech")
    full = datasets.create("bbc-known-item", {"split": "test", "candidates": 0, "n_queries": 5})
    assert full.x[0]["docs"] is full.x[1]["docs"]  # one shared corpus list, not copies
    train = datasets.create("bbc-known-item", {"split": "train"})
    test = datasets.create("bbc-known-item", {"split": "test"})
    assert not {e["qid"] for e in train.x} & {e["qid"] for e in test.x}
    shift = datasets.create("bbc-known-item", {"split": "test", "domain": "shift", "n_queries": 5})
    assert set(shift.meta["category"]) <= {"entertainment", "sports"}
    lead = datasets.create("bbc-known-item", {"split": "test", "query": "lead", "n_queries": 5})
    assert lead.x[0]["query"] == arts[lead.x[0]["qid"]]["lead"]
    with pytest.raises(ConfigError, match="domain"):
        datasets.create("bbc-known-item", {"domain": "cooking"})


def test_bm25_equals_rank_bm25(bbc):
    from rank_bm25 import BM25Okapi

    docs = bbc.x[0]["docs"]
    ours = models.create("bm25").score_many([e["query"] for e in bbc.x], docs).numpy()
    ref_index = BM25Okapi([tokenize(d) for d in docs])
    ref = np.stack([ref_index.get_scores(tokenize(e["query"])) for e in bbc.x])
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)
    assert (np.argsort(-ours, 1, kind="stable") == np.argsort(-ref, 1, kind="stable")).all()


def _fixture():
    qrels = {"q1": {"d1": 2, "d3": 1, "d9": 1}, "q2": {"d2": 1}, "q3": {"d4": 3, "d5": 1}}
    run = {"q1": {"d1": 0.2, "d2": 0.9, "d3": 0.5, "d4": 0.1, "d5": 0.3},
           "q2": {"d1": 0.8, "d2": 0.05, "d3": 0.6, "d4": 0.7, "d5": 0.4, "d6": 0.3, "d7": 0.2,
                  "d8": 0.15, "d9": 0.12, "d10": 0.11, "d11": 0.1},
           "q3": {"d4": 0.4, "d5": 0.95, "d6": 0.1}}  # fmt: skip
    return qrels, run


def test_metrics_equal_ir_measures_and_pytrec_eval():
    import ir_measures
    import pytrec_eval
    from ir_measures import AP, RR, R, nDCG

    qrels, run = _fixture()
    qs = sorted(qrels)
    ours = rank_metrics(
        [torch.tensor(list(run[q].values())) for q in qs],
        [[float(qrels[q].get(d, 0)) for d in run[q]] for q in qs],
        [list(map(float, qrels[q].values())) for q in qs], k=10, recall_k=5,
    )  # fmt: skip
    ref = ir_measures.calc_aggregate([RR @ 10, nDCG @ 10, R @ 5, AP], qrels, run)
    assert float(ours["rr"].mean()) == pytest.approx(ref[RR @ 10])
    assert float(ours["ndcg"].mean()) == pytest.approx(ref[nDCG @ 10])
    assert float(ours["recall"].mean()) == pytest.approx(ref[R @ 5])
    assert float(ours["ap"].mean()) == pytest.approx(ref[AP])
    per = pytrec_eval.RelevanceEvaluator(qrels, {"map", "ndcg_cut.10", "recall.5"}).evaluate(run)
    for i, q in enumerate(qs):  # per query, directly against trec_eval's C code
        assert float(ours["ap"][i]) == pytest.approx(per[q]["map"])
        assert float(ours["ndcg"][i]) == pytest.approx(per[q]["ndcg_cut_10"])
        assert float(ours["recall"][i]) == pytest.approx(per[q]["recall_5"])
    assert relative_drop(0.8, 0.6) == pytest.approx(0.25)


def test_task_records_and_bad_input(bbc):
    task = tasks.create("ranking", {"k": 10, "recall_k": 100})
    ev = task.evaluate(models.create("bm25"), bbc.x, bbc.y)
    ranks = np.array(ev.extra["rank"])
    found = ~np.isnan(ranks)
    assert np.allclose(ev.correct.numpy()[found], np.where(ranks[found] <= 10, 1 / ranks[found], 0))
    assert 0.5 < float(ev.correct.mean()) < 0.8  # BM25 MRR@10 on BBC known-item search
    x = [dict(bbc.x[0]), {**bbc.x[1], "n_rel": 0}, {**bbc.x[2], "docs": [], "doc_ids": []}]
    y = [bbc.y[0], [0.0] * 100, []]
    ev = task.evaluate(models.create("bm25"), x, y)
    assert ev.error[0] is None and "no relevant" in ev.error[1] and "no candidate" in ev.error[2]
    assert torch.isnan(ev.correct[1:]).all()


def test_trec_loaders_and_bad_input(tmp_path):
    qrels, run = _fixture()
    (tmp_path / "topics.tsv").write_text("q1\tfirst query\nq2\tsecond\nq3\tthird\nq4\tno rels\n")
    (tmp_path / "qrels.txt").write_text(
        "".join(f"{q} 0 {d} {g}\n" for q, r in qrels.items() for d, g in r.items())
        + "q2 0 d404 1\n"
    )
    (tmp_path / "run.txt").write_text("".join(
        f"{q} Q0 {d} {i + 1} {s} test\n" for q, r in run.items()
        for i, (d, s) in enumerate(sorted(r.items(), key=lambda t: -t[1]))))  # fmt: skip
    docs = [{"_id": f"d{i}", "title": f"t{i}", "text": "" if i == 7 else f"text {i}"}
            for i in range(1, 12)]  # fmt: skip
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        data = datasets.create("trec", {k: str(tmp_path / f) for k, f in (
            ("topics", "topics.tsv"), ("qrels", "qrels.txt"), ("corpus", "corpus.jsonl"),
            ("run", "run.txt"))})  # fmt: skip
    msgs = " ".join(str(m.message) for m in w)
    assert "missing from the corpus" in msgs and "d404" in msgs and "no relevant" in msgs
    assert len(data) == 4 and data.x[0]["doc_ids"][0] == "d2" and data.x[3]["n_rel"] == 0
    # the task's nDCG over the loaded run equals ir-measures (ideal uses unretrieved relevant docs)
    import ir_measures
    from ir_measures import nDCG

    from robustlab.models import CallableRanker

    qid = {"first query": "q1", "second": "q2", "third": "q3", "no rels": "q4"}
    ids = {f"t{i} {'' if i == 7 else f'text {i}'}".strip(): f"d{i}" for i in range(1, 12)}
    ranker = CallableRanker(lambda q, ds: [run[qid[q]][ids[d]] for d in ds])
    ev = tasks.create("ranking").evaluate(ranker, data.x[:3], data.y[:3])
    ref = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    assert np.mean(ev.extra["ndcg"]) == pytest.approx(ref)
    sgml = tmp_path / "topics.trec"
    sgml.write_text("<top>\n<num> Number: 301\n<title> International Organized Crime\n</top>\n")
    from robustlab.data.ranking.trec import read_topics

    assert read_topics(sgml) == {"301": "International Organized Crime"}
    (tmp_path / "bad.txt").write_text("q1 d1 1\n")
    with pytest.raises(ConfigError, match="4 fields"):
        datasets.create("trec", {"topics": str(tmp_path / "topics.tsv"),
                                 "qrels": str(tmp_path / "bad.txt"),
                                 "corpus": str(tmp_path / "corpus.jsonl")})  # fmt: skip
