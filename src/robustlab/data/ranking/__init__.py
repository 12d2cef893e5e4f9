"""Ranking collections: examples ``{"query", "docs", "doc_ids", "qid", "n_rel"}`` with relevance lists.

``docs`` of examples over one corpus is the *same* list object (candidate lists share the document
strings), so rankers index a corpus once (their caches key on the list's identity). ``corpus`` is the
whole collection (one shared list): rankers take collection statistics (BM25's N, df, avgdl) from
it, not from a query's candidate list.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from robustlab.data.base import Dataset


def build_examples(
    queries: dict[str, str],
    qrels: dict[str, dict[str, float]],
    doc_ids: list[str],
    texts: list[str],
    candidates: dict[str, list[str]] | None = None,
    name: str = "ranking",
    ids: Sequence[int] | None = None,
    meta: dict[str, list[Any]] | None = None,
) -> Dataset:
    """A ranking :class:`Dataset` from queries, graded qrels and a corpus (optionally a run).

    Without ``candidates`` every query ranks the whole corpus (one shared list). Qrels naming
    documents missing from the corpus are dropped with a warning; queries without any relevant
    document keep ``n_rel = 0`` and become per-example error records in the ranking task.
    """
    pos = {d: i for i, d in enumerate(doc_ids)}
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        warnings.warn(
            f"{name}: {empty} empty documents (they score as documents with no terms)", stacklevel=2
        )
    missing = {(q, d) for q, rel in qrels.items() for d in rel if d not in pos}
    if missing:
        q, d = sorted(missing)[0]
        warnings.warn(
            f"{name}: {len(missing)} qrels name documents missing from the corpus "
            f"(first: query {q!r}, doc {d!r}); they are ignored",
            stacklevel=2,
        )
    x, y = [], []
    for qid, text in queries.items():
        rel = {d: g for d, g in qrels.get(qid, {}).items() if d in pos and g > 0}
        if candidates is None:
            cand_ids, docs = doc_ids, texts
        else:
            cand_ids = [d for d in candidates.get(qid, []) if d in pos]
            docs = [texts[pos[d]] for d in cand_ids]
        x.append({"query": text, "docs": docs, "doc_ids": cand_ids, "qid": qid, "n_rel": len(rel),
                  "ideal": sorted(rel.values(), reverse=True), "corpus": texts})  # fmt: skip
        y.append([float(rel.get(d, 0.0)) for d in cand_ids])
    norel = sum(1 for e in x if e["n_rel"] == 0)
    if norel:
        warnings.warn(
            f"{name}: {norel} queries have no relevant documents (error records)", stacklevel=2
        )
    return Dataset(x, y, name, ids=None if ids is None else _ids(ids), meta=meta or {})


def _ids(ids: Sequence[int]) -> Any:
    import torch

    return torch.as_tensor(list(ids), dtype=torch.long)
