"""RAG pipeline, bundled BBC cloze QA set, rag task and the rag-bbc suite end to end."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models, tasks
from robustlab.data.base import Dataset
from robustlab.data.qa import qa_corpus
from robustlab.models.rag import RAGPipeline
from robustlab.models.rankers.index import tokenize


@pytest.fixture(scope="module")
def data() -> Dataset:
    return datasets.create("bbc-qa", {"n": 60})


@pytest.fixture(scope="module")
def rag() -> RAGPipeline:
    return models.create("rag", {"retriever": "bm25", "reader": "cloze-reader", "k": 2})


def test_qa_set_is_deterministic_and_well_formed(data: Dataset) -> None:
    again = datasets.create("bbc-qa", {"n": 60})
    assert again.x == data.x and again.y == data.y and torch.equal(again.ids, data.ids)
    ids, texts = qa_corpus()
    corpus = dict(zip(ids, texts, strict=True))
    assert len(data) == 60 and len(set(data.ids.tolist())) == 60
    assert len(set(data.meta["category"])) >= 4  # a mix of BBC categories
    for e, ans in zip(data.x, data.y, strict=True):
        assert corpus[e["doc_id"]] == e["context"]
        assert e["question"].count("___") == 1
        # the question is a sentence of the gold passage with the answer span blanked out
        assert e["question"].replace("___", ans) in e["context"]
        assert len(re.findall(re.escape(ans), e["context"])) == 1
        assert any(c.isdigit() for c in ans)


def test_bm25_retrieval_matches_rank_bm25(data: Dataset, rag: RAGPipeline) -> None:
    from rank_bm25 import BM25Okapi

    x = data.x[:4]
    edited = [{**x[0], "context": x[0]["context"].replace("the", "teh")}, *x[1:]]
    tokens = [tokenize(d) for d in rag.texts]
    for batch in (x, edited):
        got = rag.scores(batch)
        for i, e in enumerate(batch):
            docs = list(tokens)
            docs[rag.pos[e["doc_id"]]] = tokenize(e["context"])
            ref = BM25Okapi(docs).get_scores(tokenize(e["question"]))
            np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-9, atol=1e-9)
    top = rag.retrieve(x)
    assert all(len(t) == 2 for t in top)


def test_missing_context_removes_the_gold_passage(data: Dataset, rag: RAGPipeline) -> None:
    x = [{**e, "context": ""} for e in data.x[:10]]
    out = rag.forward(x)
    assert not any(out["gold_in_topk"])
    assert all(s == float("-inf") for s in out["gold_score"])
    assert rag.forward(data.x[:10])["gold_in_topk"] == [True] * 10


def test_cloze_reader_pipeline_answers_the_bundled_questions(
    data: Dataset, rag: RAGPipeline
) -> None:
    task = tasks.create("rag", {"match": "contains"})
    ev = task.evaluate(rag, data.x, data.y)
    assert float(ev.correct.mean()) >= 0.9
    assert sum(ev.extra["gold_retrieved"]) / len(data) >= 0.95
    exact = tasks.create("rag", {"match": "exact"}).evaluate(rag, data.x, data.y)
    assert float(exact.correct.mean()) >= 0.85
    # the long-context (FailSafeQA) setting: the reader gets the gold passage itself
    oracle = models.create("rag", {"retriever": None, "reader": "cloze-reader"})
    assert float(task.evaluate(oracle, data.x, data.y).correct.mean()) >= 0.9


def test_task_perturb_marks_unanswerable_examples(data: Dataset) -> None:
    from robustlab.core.registry import perturbations
    from robustlab.core.rng import ExampleRNG

    task = tasks.create("rag")
    rng = ExampleRNG.from_seed(0, data.ids[:6])
    out = task.perturb(perturbations.create("context_missing"), data.x[:6], 1.0, rng)
    assert [e["context"] for e in out] == [""] * 6 and not any(e["answerable"] for e in out)
    out = task.perturb(perturbations.create("typo"), data.x[:6], 0.5, rng)
    assert all(e["answerable"] for e in out) and out[0]["context"] == data.x[0]["context"]
    assert data.x[0].get("answerable") is None  # inputs are not mutated


def test_bad_input_is_refused(data: Dataset, rag: RAGPipeline) -> None:
    with pytest.raises(ConfigError, match="k must be"):
        RAGPipeline(None, rag.reader, ["a"], ["b"], k=0)
    with pytest.raises(ConfigError, match="unique ids"):
        RAGPipeline(None, rag.reader, ["a", "a"], ["b", "c"])
    with pytest.raises(ConfigError, match="question"):
        rag.answer(["not a dict"])  # type: ignore[list-item]
    task = tasks.create("rag")
    with pytest.raises(ConfigError, match="same n_docs"):
        task.check(rag, datasets.create("bbc-qa", {"n": 5, "n_docs": 50, "window": 2}))
    with pytest.raises(ConfigError, match="QA examples"):
        task.check(rag, Dataset(x=["q"], y=["a"]))
    with pytest.raises(ConfigError, match="judge"):
        tasks.create("rag", {"judge": "oracle"}).evaluate(rag, data.x[:1], data.y[:1])


def _suite(n: int) -> Any:
    from robustlab.runner import Suite

    spec = yaml.safe_load((files("robustlab") / "suites" / "rag-bbc.yaml").read_text())
    spec["models"] = [m for m in spec["models"] if m["label"] == "bm25-cloze"]
    spec["data"]["params"]["n"] = n
    spec["probes"] = [p for p in spec["probes"] if p.get("models") in (None, ["bm25-cloze"])]
    for p in spec["probes"]:
        if p["name"] == "garag":
            p["params"] = {"population": 4, "generations": 2}
    return Suite.parse(spec)


def test_rag_suite_end_to_end(tmp_path: Any) -> None:
    from robustlab.metrics import summarize
    from robustlab.metrics.failsafe import failsafe_scores
    from robustlab.runner import run_suite
    from robustlab.store import Store

    suite = _suite(8)
    suite.validate_components()
    store = Store(str(tmp_path / "s.db"))
    run_id = run_suite(suite, store)
    df = store.records(run_id)
    assert df["error"].isna().all()
    probes = set(df["probe"])
    assert {"clean", "garag", "context_missing", "query_misspelled"} <= probes
    assert (df["probe"] == "clean").sum() == 8
    s = summarize(df, ["accuracy", "context_grounding", "attack_success_rate"])
    clean = s[(s.probe == "clean") & (s.metric == "accuracy")]["value"].item()
    garag = s[(s.probe == "garag") & (s.metric == "accuracy")]["value"]
    assert clean >= 0.75 and (garag <= clean).all()
    fs = failsafe_scores(df)
    assert fs["n_examples"].item() == 8 and 0 <= fs["compliance"].item() <= 1
    # the report has the FailSafeQA section with the same scores
    from robustlab.report import write_report

    html, js = write_report(store, run_id, str(tmp_path / "reports"))
    page = Path(html).read_text()
    assert "FailSafeQA" in page and "Context Grounding" in page and "<svg" in page
    data = json.loads(Path(js).read_text())
    sec = data["extensions"]["failsafe"]["data"]
    assert sec["scores"][0]["compliance"] == pytest.approx(fs["compliance"].item())


@pytest.mark.slow
def test_smollm2_reader_is_measurably_above_zero(data: Dataset) -> None:
    rag = models.create("rag", {"retriever": "bm25", "reader": "smollm2-135m", "k": 1})
    ev = tasks.create("rag").evaluate(rag, data.x[:40], data.y[:40])
    assert float(ev.correct.mean()) >= 0.05


def test_llm_reader_answers_are_cached(data: Dataset) -> None:
    rag = models.create("rag", {"retriever": "bm25", "reader": "smollm2-135m", "k": 1})
    first = rag.answer(data.x[:2])
    before = rag.reader.generated
    again = models.create("rag", {"retriever": "bm25", "reader": "smollm2-135m", "k": 1})
    assert again.answer(data.x[:2]) == first and again.reader.generated == 0
    assert rag.answer(data.x[:2]) == first and rag.reader.generated == before
    assert all(isinstance(a, str) for a in first) and rag.calls == 4


def test_cloze_reader_by_hand() -> None:
    r = models.create("cloze-reader")
    q = ["Sales rose ___ to $11bn in May."]
    p = [["TimeWarner said sales rose 2% to $11bn in May, and costs rose 3% to $2bn."]]
    assert r.read(q, p) == ["2%"]
    # "2%" aligns on 2 words left + 4 right (+0.5 number bonus), the best competitor "3%" on
    # "rose" and "to" (+0.5): 6.5 / (6.5 + 2.5)
    assert r.answer_scores(q, p, ["2%"]) == [pytest.approx(6.5 / 9)]
    assert r.answer_scores(q, p, ["7%"]) == [0.0]
    typo = [["TimeWarner said sales rsoe 2% to $11nb in May, and costs rose 3% to $2bn."]]
    assert r.read(q, typo) == ["3%"]  # typos around the answer break its alignment
    assert r.read(["Nothing ___ here."], [["No match at all."]]) == ["unknown"]


def test_context_over_the_llm_window_is_a_per_example_error(data: Dataset) -> None:
    rag = models.create("rag", {"retriever": None, "reader": "smollm2-135m"})
    x = [{**data.x[0], "context": " ".join(["word"] * 6000)}, data.x[1]]
    ev = tasks.create("rag").evaluate(rag, x, data.y[:2])
    assert "context size" in ev.error[0] and ev.error[1] is None
    assert ev.correct[0] != ev.correct[0] and ev.pred[1] is not None  # NaN for the failed one
