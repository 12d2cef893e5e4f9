"""Rankers: query + candidate documents -> one score per document (higher = more relevant).

``bm25`` (vectorised Okapi BM25), ``ltr`` (LambdaMART over classic features), ``minilm``
(all-MiniLM-L6-v2 bi-encoder with cached document embeddings), ``rerank`` (a first stage's top-k
re-scored by a second ranker) and ``http-ranker`` (JSON POST to any service). Every ranker also
answers ``score_many(queries, docs) -> [Q, D]``; use :func:`score_many` for any ranker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def score_many(model: Any, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
    """``[Q, D]`` scores of several queries over one document list (batched where supported)."""
    if hasattr(model, "score_many"):
        return model.score_many(list(queries), docs)
    if not len(queries):
        return torch.zeros(0, len(docs))
    return torch.stack([torch.as_tensor(model.scores(q, docs)).flatten().double() for q in queries])
