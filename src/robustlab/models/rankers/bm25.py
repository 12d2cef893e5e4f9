"""Okapi BM25 (Robertson & Zaragoza, 2009), vectorised with scipy sparse matrices.

Scores equal ``rank_bm25.BM25Okapi`` on the same tokens (ATIRE idf ``log((N - n + .5)/(n + .5))``,
negative idf floored at ``epsilon`` x the mean idf; query terms counted with repeats).

**Collection statistics.** ``N``, the document frequencies ``n`` and ``avgdl`` are those of the
*collection* given to :meth:`BM25Ranker.fit_collection` (the ranking task passes each example's
``corpus``; :class:`~robustlab.models.rankers.rerank.ReRanker` passes the list it re-ranks), never of
the candidate list being scored: re-scoring BM25's own top-20 must reproduce BM25's order, and with
the 20-document list as "collection" it did not (MRR@10 0.950 -> 0.821 on ``bbc-known-item``). A
scored document outside the collection (an attacked variant) counts for its terms' ``n`` at least
through the scored list (``n = max(n_collection, n_list)``). Without a collection the scored list
is its own collection, as in ``rank_bm25`` built on that list.

The per-list weight matrix ``W[d, t] = idf_t tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))`` is
cached, so a batch of queries over one list is a single sparse product.

Example::

    r = BM25Ranker().fit_collection(corpus)
    r.scores("oil prices", corpus[:20])   # the corpus' idf and avgdl, not the 20 documents'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from robustlab.core.registry import models
from robustlab.core.types import Capabilities
from robustlab.models.rankers.index import DocIndex, IndexCache, Vocab


@dataclass(frozen=True)
class CollectionStats:
    """``N``, ``avgdl``, document frequency per global term id and the mean idf (for the floor)."""

    corpus: Sequence[str]
    n: int
    avgdl: float
    df: np.ndarray
    mean_idf: float

    def doc_freq(self, idx: DocIndex) -> tuple[float, np.ndarray]:
        """``(N, n_t)`` for the terms of ``idx``: the collection's, at least the list's own."""
        known = idx.terms < len(self.df)
        cdf = np.zeros(len(idx.terms))
        cdf[known] = self.df[idx.terms[known]]
        df = np.maximum(cdf, idx.df)
        return float(max(self.n, df.max(initial=0.0))), df


def _idf(n: float, df: np.ndarray) -> np.ndarray:
    return np.log(n - df + 0.5) - np.log(df + 0.5)


class BM25Ranker:
    """BM25 ranker (black-box, deterministic); ``score_many`` scores a batch of queries at once."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.vocab = Vocab()
        self._cache = IndexCache()
        self.collection: CollectionStats | None = None
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def fit_collection(self, corpus: Sequence[str] | None) -> BM25Ranker:
        """Take ``N``, ``n_t`` and ``avgdl`` from ``corpus`` for every later scoring (``None``:
        each scored list is its own collection). Refitting the same list object is free."""
        if corpus is None or not len(corpus):
            if self.collection is not None:
                self.collection, self._cache = None, IndexCache()
            return self
        if self.collection is not None and self.collection.corpus is corpus:
            return self
        idx = DocIndex.build(corpus, self.vocab)
        df = np.zeros(int(idx.terms.max(initial=-1)) + 1)
        df[idx.terms] = idx.df
        idf = _idf(len(corpus), idx.df)
        mean = float(idf.mean()) if len(idf) else 0.0
        avgdl = float(idx.doc_len.sum() / len(corpus))
        self.collection = CollectionStats(corpus, len(corpus), avgdl, df, mean)
        self._cache = IndexCache()
        return self

    def doc_freq(self, idx: DocIndex) -> tuple[float, np.ndarray]:
        """``(N, n_t)`` behind the idf of ``idx``'s terms (the collection's if fitted)."""
        if self.collection is not None:
            return self.collection.doc_freq(idx)
        return float(len(idx.doc_len)), idx.df

    def weights(self, docs: Sequence[str]) -> tuple[DocIndex, sp.csr_matrix]:
        """The index of ``docs`` and its BM25 weights, transposed: ``[T, D]`` (cached per list)."""
        return self._cache.get(docs, self._build)

    def _build(self, docs: Sequence[str]) -> tuple[DocIndex, sp.csr_matrix]:
        idx = DocIndex.build(docs, self.vocab)
        n, df = self.doc_freq(idx)
        seen = df > 0
        idf = np.zeros_like(df)
        idf[seen] = _idf(n, df[seen])
        if self.collection is not None:
            floor, avgdl = self.collection.mean_idf, self.collection.avgdl
        else:
            floor = float(idf[seen].mean()) if seen.any() else 0.0
            avgdl = idx.doc_len.sum() / max(len(docs), 1)
        idf[seen & (idf < 0)] = self.epsilon * floor
        tf = idx.tf.tocoo()
        norm = self.k1 * (1 - self.b + self.b * idx.doc_len / max(avgdl, 1e-12))
        w = idf[tf.col] * tf.data * (self.k1 + 1) / (tf.data + norm[tf.row])
        # stored transposed ([T, D] CSR): a query batch is one CSR x CSR product
        return idx, sp.csr_matrix((w, (tf.col, tf.row)), shape=tf.shape[::-1])

    def score_many(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        """``[Q, D]`` scores of every query against every document of ``docs``."""
        if not len(docs):
            return torch.zeros(len(queries), 0)
        idx, w = self.weights(docs)
        q = idx.queries(queries)
        return torch.from_numpy(np.asarray((q @ w).todense(), dtype=np.float64))

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor:
        return self.score_many([query], docs)[0]

    def fingerprint(self) -> str:
        return hashlib.sha256(f"bm25|{self.k1}|{self.b}|{self.epsilon}".encode()).hexdigest()[:16]


@models.register("bm25")
def bm25(k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> BM25Ranker:
    """Okapi BM25 with collection statistics (vectorised; equal to rank_bm25.BM25Okapi)."""
    return BM25Ranker(k1=k1, b=b, epsilon=epsilon)
