"""Okapi BM25 (Robertson & Zaragoza, 2009), vectorised with scipy sparse matrices.

Scores equal ``rank_bm25.BM25Okapi`` on the same tokens (ATIRE idf ``log((N - n + .5)/(n + .5))``,
negative idf floored at ``epsilon`` x the mean idf; query terms counted with repeats): the corpus
statistics come from the document list passed to :meth:`BM25Ranker.scores`, as in ``rank_bm25``.
The per-list weight matrix ``W[d, t] = idf_t tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))`` is
cached, so a batch of queries over one list is a single sparse product.

Example::

    r = BM25Ranker()
    r.scores("oil prices", ["Oil prices rose.", "A football match."])  # tensor([0.47, 0.])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from robustlab.core.registry import models
from robustlab.core.types import Capabilities
from robustlab.models.rankers.index import DocIndex, IndexCache, Vocab


class BM25Ranker:
    """BM25 ranker (black-box, deterministic); ``score_many`` scores a batch of queries at once."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.vocab = Vocab()
        self._cache = IndexCache()
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def weights(self, docs: Sequence[str]) -> tuple[DocIndex, sp.csr_matrix]:
        """The index of ``docs`` and its BM25 weights, transposed: ``[T, D]`` (cached per list)."""
        return self._cache.get(docs, self._build)

    def _build(self, docs: Sequence[str]) -> tuple[DocIndex, sp.csr_matrix]:
        idx = DocIndex.build(docs, self.vocab)
        n = len(docs)
        seen = idx.df > 0
        idf = np.zeros_like(idx.df)
        idf[seen] = np.log(n - idx.df[seen] + 0.5) - np.log(idx.df[seen] + 0.5)
        if seen.any():
            idf[seen & (idf < 0)] = self.epsilon * idf[seen].mean()
        avgdl = idx.doc_len.sum() / max(n, 1)
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
    """Okapi BM25 over the candidate list (vectorised; equal to rank_bm25.BM25Okapi)."""
    return BM25Ranker(k1=k1, b=b, epsilon=epsilon)
