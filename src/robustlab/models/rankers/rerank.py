"""Re-ranking: a first-stage ranker's top-``depth`` candidates re-scored by a second ranker.

Scores are rank-based so any two rankers combine: the top ``depth`` documents of the first stage get
``2 depth - r2`` (``r2`` their rank under the second ranker, 1-based), the rest ``-r1`` (their
first-stage rank), so the final order is the second ranker's order on the head, then the first
stage's. The second stage scores the head with the collection's statistics (the corpus given to
:meth:`ReRanker.fit_collection`, else the whole list being ranked), never the head's own: BM25
re-ranking BM25's top 20 reproduces BM25's order. Example: BM25 retrieves, MiniLM re-ranks the top 20::

    r = models.create("rerank", {"first": "bm25", "second": "minilm", "depth": 20})
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.types import Capabilities
from robustlab.models.rankers import score_many


class ReRanker:
    """``second`` re-ranks the top ``depth`` documents of ``first`` (both any rankers)."""

    def __init__(self, first: Any, second: Any, depth: int = 20) -> None:
        if depth < 1:
            raise ConfigError(f"rerank depth must be >= 1, got {depth}")
        self.first, self.second, self.depth = first, second, depth
        self.corpus: Sequence[str] | None = None
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def fit_collection(self, corpus: Sequence[str] | None) -> ReRanker:
        """Collection statistics (BM25's N, df, avgdl) for both stages; ``None``: the list being
        ranked is the collection."""
        self.corpus = corpus
        for m in (self.first, self.second):
            if hasattr(m, "fit_collection"):
                m.fit_collection(corpus)
        return self

    def prepare(self, docs: Sequence[str], persist: bool = True) -> None:
        for m in (self.first, self.second):
            if hasattr(m, "prepare"):
                m.prepare(docs, persist=persist)

    def score_many(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        s1 = score_many(self.first, queries, docs).double()
        n = s1.shape[1]
        if not n or not len(queries):
            return s1
        d = min(self.depth, n)
        order1 = torch.argsort(s1, dim=1, descending=True, stable=True)
        rank1 = torch.empty_like(order1)
        rank1.scatter_(1, order1, torch.arange(1, n + 1).expand_as(order1).contiguous())
        out = -rank1.double()
        if hasattr(self.second, "fit_collection"):  # the head is re-scored with the statistics of
            self.second.fit_collection(self.corpus if self.corpus is not None else docs)  # the list
        for i, q in enumerate(queries):  # the head differs per query: one second-stage call each
            head = order1[i, :d].tolist()
            s2 = score_many(self.second, [q], [docs[j] for j in head])[0]
            r2 = torch.argsort(torch.argsort(s2, descending=True, stable=True)) + 1
            out[i, head] = (2 * d - r2).double()
        return out

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor:
        return self.score_many([query], docs)[0]

    def fingerprint(self) -> str:
        parts = f"{self.first.fingerprint()}|{self.second.fingerprint()}|{self.depth}"
        return hashlib.sha256(parts.encode()).hexdigest()[:16]


@models.register("rerank")
def rerank(first: str = "bm25", second: str = "minilm", depth: int = 20,
           first_params: dict | None = None, second_params: dict | None = None,
           seed: int = 0) -> ReRanker:  # fmt: skip
    """A first-stage ranker's top-``depth`` re-ranked by a second ranker (any registered rankers)."""

    def make(name: str, params: dict | None) -> Any:
        p = dict(params or {})
        if name == "ltr":
            p.setdefault("seed", seed)
        return models.create(name, p)

    return ReRanker(make(first, first_params), make(second, second_params), depth)
