"""Ranking: each example is a query with candidate documents and their relevance grades."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import tasks
from robustlab.data.base import Dataset
from robustlab.tasks.base import Evaluation, isolate, merge_list


@tasks.register("ranking")
class RankingTask:
    """Reciprocal rank of the first relevant document within the top ``k`` (MRR@k per query).

    Inputs are dicts ``{"query": str, "docs": [str, ...]}``; labels are lists of relevance grades
    (one per doc, > 0 means relevant). Perturbations apply to the query text.
    """

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def evaluate(self, model: Any, x: list[dict[str, Any]], y: list[list[float]]) -> Evaluation:
        def score(pos: list[int]) -> list[torch.Tensor]:
            out = []
            for i in pos:
                s = model.scores(x[i]["query"], x[i]["docs"]).flatten()
                if s.shape[0] != len(x[i]["docs"]) or not torch.isfinite(s).all():
                    raise ModelOutputError(
                        f"ranker returned {tuple(s.shape)} (finite: {bool(torch.isfinite(s).all())}) "
                        f"for {len(x[i]['docs'])} documents"
                    )
                out.append(s)
            return out

        chunks, errs = isolate(score, len(x))
        outs = {i: s for i, s in enumerate(merge_list(chunks, len(x))) if s is not None}
        preds: list[Any] = []
        rr: list[float] = []
        for i in range(len(x)):
            if i not in outs:
                preds.append(None)
                rr.append(float("nan"))
                continue
            order = torch.argsort(outs[i], descending=True, stable=True)
            rel = torch.as_tensor(y[i], dtype=torch.float32)[order] > 0
            hits = torch.nonzero(rel[: self.k]).flatten()
            rr.append(1.0 / (int(hits[0]) + 1) if len(hits) else 0.0)
            preds.append(order[: self.k].tolist())
        return Evaluation(preds, torch.tensor(rr), [errs.get(i) for i in range(len(x))])

    def perturb(self, perturbation: Any, x: list[dict[str, Any]], level: float, rng: Any) -> Any:
        queries = perturbation([e["query"] for e in x], level, rng)
        return [{**e, "query": q} for e, q in zip(x, queries, strict=True)]

    def check(self, model: Any, data: Dataset) -> None:
        if not hasattr(model, "scores"):
            raise ConfigError(f"ranking needs a ranker adapter, got {type(model).__name__}")
        for e in data.x[:1]:
            if not isinstance(e, dict) or "query" not in e or "docs" not in e:
                raise ConfigError(
                    f"ranking examples must be dicts with 'query' and 'docs' ({data.name})"
                )
