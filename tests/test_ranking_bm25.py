"""BM25 takes N, df and avgdl from the collection, never from the candidate list it scores.

The audit: re-ranking BM25's own top-20 of the bundled BBC data dropped MRR@10 from 0.950 to 0.821,
because the 20 candidates were treated as the collection (idf over 20 documents).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.core.registry import datasets, models, tasks
from robustlab.models.rankers.index import tokenize

PARAMS = {"split": "test", "n_queries": 30, "max_docs": 400}


@pytest.fixture(scope="module")
def full():
    return datasets.create("bbc-known-item", {**PARAMS, "candidates": 0})


@pytest.fixture(scope="module")
def top20():
    return datasets.create("bbc-known-item", {**PARAMS, "candidates": 20})


def _orders(model, data) -> list[torch.Tensor]:
    _, orders = tasks.create("ranking", {"k": 10}).ranked(model, data.x, data.y)
    return orders


@pytest.mark.parametrize("depth", [5, 20, 50])
def test_reranking_bm25_top_k_with_bm25_reproduces_bm25(full, depth):
    bm25 = _orders(models.create("bm25"), full)
    rr = models.create("rerank", {"first": "bm25", "second": "bm25", "depth": depth})
    again = _orders(rr, full)
    assert all(torch.equal(a, b) for a, b in zip(bm25, again, strict=True))
    # also outside the ranking task (no corpus given: the re-ranked list is the collection)
    q = [e["query"] for e in full.x]
    s1 = models.create("bm25").score_many(q, full.x[0]["docs"])
    s2 = rr.__class__(models.create("bm25"), models.create("bm25"), depth).score_many(
        q, full.x[0]["docs"]
    )
    o1, o2 = (
        torch.argsort(s1, dim=1, descending=True, stable=True),
        torch.argsort(s2, dim=1, descending=True, stable=True),
    )
    assert torch.equal(o1[:, :depth], o2[:, :depth])


def test_candidate_lists_are_scored_with_collection_statistics(full, top20):
    """Scores over each query's 20 candidates equal rank_bm25 built on the whole corpus."""
    from rank_bm25 import BM25Okapi

    corpus = top20.x[0]["corpus"]
    assert corpus is full.x[0]["docs"] or corpus == full.x[0]["docs"]
    ref_index = BM25Okapi([tokenize(d) for d in corpus])
    pos = {d: i for i, d in enumerate(corpus)}
    task = tasks.create("ranking", {"k": 10})
    bm25 = models.create("bm25")
    scores, _ = task.scores(bm25, top20.x)
    for e, s in zip(top20.x, scores, strict=True):
        ref = ref_index.get_scores(tokenize(e["query"]))[[pos[d] for d in e["docs"]]]
        np.testing.assert_allclose(s.numpy(), ref, rtol=1e-10, atol=1e-10)
    # so the 20-candidate re-ranking keeps BM25's full-corpus MRR@10
    mrr_full = float(task.evaluate(models.create("bm25"), full.x, full.y).correct.nanmean())
    mrr_top20 = float(task.evaluate(models.create("bm25"), top20.x, top20.y).correct.nanmean())
    assert mrr_top20 == pytest.approx(mrr_full)


def test_without_a_collection_each_list_is_its_own_and_fitting_resets(full):
    from rank_bm25 import BM25Okapi

    docs = full.x[0]["docs"][:30]
    q = full.x[0]["query"]
    r = models.create("bm25")
    own = BM25Okapi([tokenize(d) for d in docs]).get_scores(tokenize(q))
    np.testing.assert_allclose(r.scores(q, docs).numpy(), own, rtol=1e-10, atol=1e-10)
    r.fit_collection(full.x[0]["docs"])
    assert not np.allclose(r.scores(q, docs).numpy(), own)
    r.fit_collection(None)  # a later unit without a corpus must not inherit stale statistics
    np.testing.assert_allclose(r.scores(q, docs).numpy(), own, rtol=1e-10, atol=1e-10)


def test_a_document_outside_the_collection_counts_for_its_terms(full):
    """An attacked document with a term the collection lacks: df >= 1 from the scored list (finite,
    positive idf, like a collection that indexed it), never a division by an empty collection."""
    r = models.create("bm25").fit_collection(full.x[0]["docs"])
    docs = [*full.x[0]["docs"][:5], "zyxwvut zyxwvut quarterly profits"]
    s = r.scores("zyxwvut profits", docs)
    assert torch.isfinite(s).all() and int(s.argmax()) == 5
