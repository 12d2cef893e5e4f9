"""Ranking metrics (MRR@k, nDCG@k, Recall@k, MAP, rank change), vectorised, trec_eval conventions.

:func:`rank_metrics` computes per-query values from scores and graded relevance (padded tensors,
no per-query loop); the ranking task stores them in each record's ``extra`` (``rr``, ``ndcg``,
``recall``, ``ap``, ``rank``), and the registered metrics below average those columns, so metrics
stay pure functions of records. Conventions follow ``trec_eval`` (checked equal to ``ir-measures``
and ``pytrec_eval`` in the tests): a document is relevant when its grade is > 0; nDCG uses linear
gains ``grade / log2(rank + 1)`` with the ideal ranking of *all* judged relevant documents of the
query (also those the candidate list misses); Recall@k and AP divide by all relevant documents.

Example::

    m = rank_metrics([torch.tensor([.9, .1, .5])], [[0., 1., 2.]], k=10)
    m["rr"], m["ndcg"]   # tensor([0.5]), ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric

if TYPE_CHECKING:  # torch is imported where rankings are scored, not to summarise records
    import torch


def _pad(rows: Sequence[Sequence[float]] | Sequence[torch.Tensor], fill: float) -> torch.Tensor:
    import torch

    n = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(n, 1)), fill, dtype=torch.float64)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.float64)
    return out


def rank_metrics(
    scores: Sequence[torch.Tensor],
    rel: Sequence[Sequence[float]],
    ideal: Sequence[Sequence[float]] | None = None,
    k: int = 10,
    recall_k: int = 100,
) -> dict[str, torch.Tensor]:
    """Per-query ``rr`` (@k), ``ndcg`` (@k), ``recall`` (@recall_k), ``ap``, ``rank`` (1-based
    rank of the first relevant document, NaN if none retrieved) and ``order`` of the documents.

    ``ideal[i]`` lists the grades of all relevant documents of query ``i`` (default: those in
    ``rel[i]``). Ties in score keep the candidate order (stable sort).
    """
    import torch

    s = _pad(scores, -float("inf"))
    g = _pad(rel, 0.0)
    order = torch.argsort(s, dim=1, descending=True, stable=True)
    gs = torch.gather(g, 1, order)
    hit = gs > 0
    pos = torch.arange(1, s.shape[1] + 1, dtype=torch.float64)
    ideal = ideal if ideal is not None else [[v for v in r if v > 0] for r in rel]
    ig = _pad([sorted((v for v in r if v > 0), reverse=True) for r in ideal], 0.0)
    n_rel = (ig > 0).sum(1).to(torch.float64)
    first = torch.where(hit.any(1), hit.double().argmax(1).double() + 1, torch.nan)
    rr = torch.where(first <= k, 1.0 / first, 0.0)
    dcg = (gs[:, :k] / torch.log2(pos[:k] + 1)).sum(1)
    top = ig[:, :k]
    idcg = (top / torch.log2(torch.arange(1, top.shape[1] + 1, dtype=torch.float64) + 1)).sum(1)
    prec = hit.cumsum(1) / pos
    ap = (prec * hit).sum(1) / n_rel
    recall = hit[:, :recall_k].sum(1) / n_rel
    return {"rr": rr, "ndcg": dcg / idcg, "recall": recall, "ap": ap, "rank": first,
            "order": order}  # fmt: skip


def relative_drop(clean: float, shifted: float) -> float:
    """``(clean - shifted) / clean``: the share of clean effectiveness lost under a shift."""
    return (clean - shifted) / clean if clean else float("nan")


def _mean_col(col: str) -> Metric:
    def values(df: pd.DataFrame) -> np.ndarray:
        v = df[f"x.{col}"] if f"x.{col}" in df else pd.Series(np.nan, index=df.index)
        return pd.to_numeric(v, errors="coerce").to_numpy(dtype=np.float64)

    return values  # type: ignore[return-value]


def _register(name: str, col: str, higher: bool, doc: str) -> Metric:
    values = _mean_col(col)
    m = Metric(name, lambda df: np.nanmean(values(df)) if np.isfinite(values(df)).any() else np.nan,
               higher_is_better=higher, per_example=values, doc=doc)  # fmt: skip
    return metrics.register(name)(m)


mrr = _register("mrr", "rr", True, "Mean reciprocal rank of the first relevant document (@k).")
ndcg = _register("ndcg", "ndcg", True, "Mean nDCG@k (linear gains, trec_eval convention).")
recall = _register("recall", "recall", True, "Mean Recall@k (k = the task's recall_k).")
map_ = _register("map", "ap", True, "Mean average precision over the candidate list.")
rank_change = _register(
    "rank_change", "rank_change", False,
    "Mean change in rank of the attacked document (query attack: positive = demoted; document "
    "attack: positive = promoted).",
)  # fmt: skip
