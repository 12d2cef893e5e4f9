"""Ranking: each example is a query with candidate documents and their relevance grades.

S1 ("Are Neural Ranking Models Robust?", Wu et al., 2022) measures rankers under five tasks; this task
turns a ranker's scores into per-query records for all of them: ``correct`` is the reciprocal rank of
the first relevant document within the top ``k`` (so the mean is MRR@k), and ``extra`` holds
``rr``, ``ndcg`` (@k), ``recall`` (@recall_k), ``ap`` and ``rank`` (see :mod:`robustlab.metrics.ranking`).
Perturbations apply to the query text; attacks (:mod:`robustlab.attacks.ranking`) edit the query or
one document within ``level`` word edits. Queries without relevant documents and examples without
candidates become error records (with a clear message), not crashes.

Example::

    task = RankingTask(k=10)
    ev = task.evaluate(models.create("bm25"), data.x, data.y)
    float(ev.correct.nanmean())   # MRR@10
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import tasks
from robustlab.data.base import Dataset
from robustlab.metrics.ranking import rank_metrics
from robustlab.models.rankers import score_many
from robustlab.tasks.base import (
    Evaluation,
    isolate,
    merge_attack_results,
    merge_list,
    take,
    take_rng,
)

METRIC_KEYS = ("rr", "ndcg", "recall", "ap", "rank")


def prepare(model: Any, x: list[dict[str, Any]]) -> None:
    """Let a ranker pre-compute what it needs for these documents (dense embeddings) at once.

    ``prepare(docs, persist=True)`` is optional for rankers; ``persist`` marks a corpus worth caching
    on disk (attacks pass ``persist=False`` for their one-off variants). Rankers with collection
    statistics (``fit_collection``: BM25, LTR, re-rankers) get the examples' ``corpus`` (the whole
    collection, not the candidate list they score), or ``None`` (each list is its own collection)."""
    if hasattr(model, "fit_collection"):
        corpora = {id(e["corpus"]): e["corpus"] for e in x if e.get("corpus") is not None}
        if len(corpora) > 1:  # examples over several collections: their union
            model.fit_collection(list(dict.fromkeys(d for c in corpora.values() for d in c)))
        else:
            model.fit_collection(next(iter(corpora.values()), None))
    if hasattr(model, "prepare"):
        docs = {id(e["docs"]): e["docs"] for e in x}
        model.prepare([d for ds in docs.values() for d in ds])


@tasks.register("ranking")
class RankingTask:
    """Per-query MRR@k (``correct``) plus nDCG@k, Recall@recall_k, AP and rank in ``extra``.

    Inputs are dicts ``{"query": str, "docs": [str, ...]}`` (optionally ``n_rel``/``ideal``: the
    number/grades of all relevant documents, also those not among the candidates); labels are lists
    of relevance grades (one per doc, > 0 means relevant).
    """

    def __init__(self, k: int = 10, recall_k: int = 100) -> None:
        self.k = k
        self.recall_k = recall_k

    def scores(self, model: Any, x: list[dict[str, Any]]) -> tuple[list[Any], dict[int, str]]:
        """Scores per example (None where the ranker failed) and error messages by position."""

        def run(pos: list[int]) -> list[torch.Tensor]:
            groups: dict[int, list[int]] = {}
            for i in pos:
                groups.setdefault(id(x[i]["docs"]), []).append(i)
            out: dict[int, torch.Tensor] = {}
            for members in groups.values():
                docs = x[members[0]]["docs"]
                s = score_many(model, [x[i]["query"] for i in members], docs)
                if s.shape != (len(members), len(docs)) or not torch.isfinite(s).all():
                    raise ModelOutputError(
                        f"ranker returned {tuple(s.shape)} scores (finite: "
                        f"{bool(torch.isfinite(s).all())}) for {len(docs)} documents"
                    )
                out.update({i: s[j] for j, i in enumerate(members)})
            return [out[i] for i in pos]

        prepare(model, x)
        chunks, errs = isolate(run, len(x))
        return merge_list(chunks, len(x)), errs

    def ranked(
        self, model: Any, x: list[dict[str, Any]], y: list[list[float]]
    ) -> tuple[Evaluation, list[torch.Tensor | None]]:
        """The evaluation and each example's full document order (None on errors)."""
        n = len(x)
        scores, errs = self.scores(model, x)
        for i, e in enumerate(x):
            if not e["docs"]:
                errs[i] = "no candidate documents for this query"
            elif e.get("n_rel", sum(1 for g in y[i] if g > 0)) == 0:
                errs[i] = "query has no relevant documents (check the qrels)"
        ok = [i for i in range(n) if i not in errs and scores[i] is not None]
        m = rank_metrics(
            [scores[i] for i in ok], [y[i] for i in ok],
            [x[i].get("ideal", [g for g in y[i] if g > 0] + [1.0] * max(
                0, x[i].get("n_rel", 0) - sum(1 for g in y[i] if g > 0))) for i in ok],
            k=self.k, recall_k=self.recall_k,
        )  # fmt: skip
        cols = {key: [float("nan")] * n for key in METRIC_KEYS}
        orders: list[torch.Tensor | None] = [None] * n
        preds: list[Any] = [None] * n
        for j, i in enumerate(ok):
            for key in METRIC_KEYS:
                cols[key][i] = float(m[key][j])
            order = m["order"][j][: len(x[i]["docs"])]
            orders[i], preds[i] = order, order[: self.k].tolist()
        correct = torch.tensor(cols["rr"], dtype=torch.float64)
        ev = Evaluation(preds, correct, [errs.get(i) for i in range(n)], extra=cols)
        return ev, orders

    def evaluate(self, model: Any, x: list[dict[str, Any]], y: list[list[float]]) -> Evaluation:
        return self.ranked(model, x, y)[0]

    def perturb(self, perturbation: Any, x: list[dict[str, Any]], level: float, rng: Any) -> Any:
        queries = perturbation([e["query"] for e in x], level, rng)
        return [{**e, "query": q} for e, q in zip(x, queries, strict=True)]

    def attack(
        self, attack: Any, model: Any, data: Dataset, level: float, norm: str, rng: Any
    ) -> tuple[Evaluation, dict[str, list[Any]]]:
        """Attack with a budget of ``level`` word edits; success is re-checked on the outputs.

        Query attacks succeed when the first relevant document leaves the top-k (applicable when it
        was in it: ``clean_correct``); document attacks when the target document enters the top-k.
        Extras: ``success``, ``queries``, ``clean_correct``, ``clean_rank``, ``rank_change``, ``edits``.
        """
        x, y, n = list(data.x), list(data.y), len(data)
        clean, clean_orders = self.ranked(model, x, y)
        target = getattr(attack, "target", "query")
        if getattr(attack, "needs_grad", False) and not model.capabilities.grad:
            name = getattr(attack, "registered_name", type(attack).__name__)
            msg = f"not applicable: {name} is white-box, {type(model).__name__} is black-box"
            nan = [float("nan")] * n
            ev = Evaluation([None] * n, torch.full((n,), float("nan"), dtype=torch.float64),
                            [msg] * n, extra={k: list(nan) for k in METRIC_KEYS})  # fmt: skip
            return ev, {"success": nan, "queries": nan, "clean_correct": nan}

        def run(pos: list[int]) -> Any:
            return attack(model, take(x, pos), take(y, pos), int(level), k=self.k,
                          rng=take_rng(rng, pos))  # fmt: skip

        chunks, errs = isolate(run, n)
        x_adv, extra = merge_attack_results(chunks, x, n)
        queries = extra.pop("queries")
        del extra["success"]  # re-checked below on the returned examples
        ev, orders = self.ranked(model, x_adv, y)
        success, clean_ok, change = [float("nan")] * n, [float("nan")] * n, [float("nan")] * n
        clean_rank = list(clean.extra["rank"])
        for i in range(n):
            if errs.get(i) or clean_orders[i] is None or orders[i] is None:
                ev.error[i] = ev.error[i] or errs.get(i) or clean.error[i]
                ev.correct[i] = float("nan")
                continue
            if target == "document":
                t = extra["target"][i]
                before = _rank_of(clean_orders[i], t)
                after = _rank_of(orders[i], t)
                clean_rank[i] = before
                clean_ok[i] = float(before > self.k)
                success[i] = float(before > self.k and after <= self.k)
                change[i] = before - after
            else:
                before, after = clean.extra["rank"][i], ev.extra["rank"][i]
                inf = len(x[i]["docs"]) + 1
                before, after = _or(before, inf), _or(after, inf)
                clean_ok[i] = float(before <= self.k)
                success[i] = float(before <= self.k and after > self.k)
                change[i] = after - before
        extra = {k: v for k, v in extra.items() if k != "target"} | (
            {"target": extra["target"]} if "target" in extra else {}
        )
        return ev, {"success": success, "queries": queries, "clean_correct": clean_ok,
                    "clean_rank": clean_rank, "rank_change": change, **extra}  # fmt: skip

    def check(self, model: Any, data: Dataset) -> None:
        if not hasattr(model, "scores"):
            raise ConfigError(f"ranking needs a ranker adapter, got {type(model).__name__}")
        for e in data.x[:1]:
            if not isinstance(e, dict) or "query" not in e or "docs" not in e:
                raise ConfigError(
                    f"ranking examples must be dicts with 'query' and 'docs' ({data.name})"
                )


def _rank_of(order: torch.Tensor, doc: int) -> int:
    return int((order == doc).nonzero()[0, 0]) + 1


def _or(v: float, default: float) -> float:
    return default if v != v else v
