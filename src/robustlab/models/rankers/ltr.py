"""Learning to rank: LambdaMART (Burges, 2010; LightGBM's ``lambdarank``) over classic IR features.

Features of a (query, document) pair, computed for a whole candidate list with sparse products:
BM25, BM25 / max BM25 of the list, TF-IDF cosine, log document length, query length, number and
share of distinct query terms in the document, log(1 + summed query-term frequency). Statistics
(N, df, avgdl) come from the collection given to :meth:`LTRRanker.fit_collection` (the ranking task
passes the examples' ``corpus``), as for :mod:`~robustlab.models.rankers.bm25`; training fits them
to the training data's corpus. The registered ``ltr``
model is trained on the *train* queries of ``bbc-known-item`` (in-domain) with the replicate as
LightGBM's seed (row/feature subsampling), so replicates measure the variance across training
seeds (S1 task 1). Trained boosters are cached under ``cache_dir()/ltr``.

Example::

    ranker = models.create("ltr", {"seed": 1})
    ranker.scores("Oil prices rise", docs)
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robustlab.core.paths import cache_dir
from robustlab.core.registry import datasets, models
from robustlab.core.types import Capabilities
from robustlab.models.rankers.bm25 import BM25Ranker

FEATURES = ("bm25", "bm25_rel", "tfidf_cos", "log_doc_len", "query_len", "overlap",
            "overlap_frac", "log_qtf")  # fmt: skip


class FeatureExtractor:
    """``[Q, D, F]`` feature tensors for queries over one candidate list (vectorised)."""

    def __init__(self) -> None:
        self.bm25 = BM25Ranker()

    def fit_collection(self, corpus: Sequence[str] | None) -> FeatureExtractor:
        """Collection statistics (N, df, avgdl) for the BM25 and TF-IDF features."""
        self.bm25.fit_collection(corpus)
        return self

    def __call__(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        idx, w = self.bm25.weights(docs)
        q = idx.queries(queries)
        n, df = self.bm25.doc_freq(idx)
        bm25 = np.asarray((q @ w).todense())
        idf = np.log((max(n, 1) + 1) / (df + 1)) + 1
        dv = idx.tf.multiply(idf[None, :]).tocsr()
        dnorm = np.sqrt(np.asarray(dv.multiply(dv).sum(1)).ravel()) + 1e-12
        qv = q.multiply(idf[None, :]).tocsr()
        qnorm = np.sqrt(np.asarray(qv.multiply(qv).sum(1)).ravel()) + 1e-12
        cos = np.asarray((qv @ dv.T).todense()) / qnorm[:, None] / dnorm[None, :]
        qb = q.copy()
        qb.data[:] = 1.0
        present = idx.tf.copy()
        present.data[:] = 1.0
        overlap = np.asarray((qb @ present.T).todense())
        qlen = np.asarray(qb.sum(1)).ravel()
        qtf = np.asarray((qb @ idx.tf.T).todense())
        shape = bm25.shape
        feats = [
            bm25,
            bm25 / np.maximum(bm25.max(1, keepdims=True), 1e-12),
            cos,
            np.broadcast_to(np.log1p(idx.doc_len)[None, :], shape),
            np.broadcast_to(qlen[:, None], shape),
            overlap,
            overlap / np.maximum(qlen[:, None], 1),
            np.log1p(qtf),
        ]
        return np.stack(feats, axis=-1)


class LTRRanker:
    """A fitted LightGBM ranker over :class:`FeatureExtractor` features (black-box)."""

    def __init__(self, booster: Any, tag: str) -> None:
        self.booster = booster
        self.tag = tag
        self.features = FeatureExtractor()
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def fit_collection(self, corpus: Sequence[str] | None) -> LTRRanker:
        self.features.fit_collection(corpus)
        return self

    def score_many(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        if not len(docs) or not len(queries):
            return torch.zeros(len(queries), len(docs), dtype=torch.float64)
        f = self.features(queries, docs)
        s = self.booster.predict(f.reshape(-1, f.shape[-1]), num_threads=1)
        return torch.from_numpy(np.asarray(s, dtype=np.float64).reshape(f.shape[:2]))

    def scores(self, query: str, docs: Sequence[str]) -> torch.Tensor:
        return self.score_many([query], docs)[0]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.booster.model_to_string().encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def _training_set(n_queries: int | None, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = datasets.get("bbc-known-item")(split="train", n_queries=n_queries)
    fx = FeatureExtractor()
    xs, ys, groups = [], [], []
    for e, rel in zip(data.x, data.y, strict=True):
        fx.fit_collection(e.get("corpus"))
        docs, labels = e["docs"][:depth], rel[:depth]
        if not docs or max(labels) <= 0:
            continue  # queries whose relevant document the first stage missed teach nothing
        xs.append(fx([e["query"]], docs)[0])
        ys.append(np.asarray(labels))
        groups.append(len(docs))
    return np.concatenate(xs), np.concatenate(ys), np.asarray(groups)


def train_ltr(seed: int = 0, n_queries: int | None = None, depth: int = 50,
              n_estimators: int = 200, num_leaves: int = 15) -> Any:  # fmt: skip
    """Train (or load from the cache) LambdaMART on the BBC train queries; returns the booster."""
    import lightgbm as lgb

    # v2: features use collection statistics (v1 used each candidate list's own)
    key = {"seed": seed, "n": n_queries, "depth": depth, "trees": n_estimators,
           "leaves": num_leaves, "features": FEATURES, "v": 2}  # fmt: skip
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "ltr" / f"lambdamart-{h}.txt"
    if path.is_file():
        return lgb.Booster(model_file=str(path))
    x, y, groups = _training_set(n_queries, depth)
    model = lgb.LGBMRanker(
        objective="lambdarank", n_estimators=n_estimators, num_leaves=num_leaves,
        learning_rate=0.05, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
        random_state=seed, n_jobs=1, verbose=-1,
    )  # fmt: skip
    model.fit(x, y, group=groups)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{seed}.tmp")
    model.booster_.save_model(str(tmp))
    tmp.replace(path)
    return model.booster_


@models.register("ltr")
def ltr(seed: int = 0, n_queries: int | None = None, depth: int = 50,
        n_estimators: int = 200) -> LTRRanker:  # fmt: skip
    """LambdaMART (LightGBM) over BM25/TF-IDF/length/overlap features, trained on BBC train queries."""
    booster = train_ltr(seed, n_queries, depth, n_estimators)
    return LTRRanker(booster, f"ltr-{seed}")
