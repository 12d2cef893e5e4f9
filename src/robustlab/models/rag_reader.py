"""An extractive cloze reader: the passage token that best fills a question's ``___`` blank.

A classical alignment reader (no learning, deterministic, fast): the question's words left and right
of the blank are aligned against every position of every passage; a position scores the length of
the exact (case-insensitive, punctuation-stripped) word run matching the left context backwards
plus the run matching the right context forwards, with a bonus of 0.5 when the candidate token has
the answer's type (a number, :data:`robustlab.data.qa.NUMBER`). The best position's token is the
answer (``unknown`` when nothing aligns). Typos in the words around the answer break the alignment,
which is what GARAG exploits; :meth:`ClozeReader.answer_scores` grades the
reader's support for a reference answer (GARAG's reader objective). Used as a fast, strong reader for :class:`RAGPipeline` tests and as a
lexical baseline next to the LLM reader.

Example::

    r = models.create("cloze-reader")
    r.read(["Sales rose ___ to $11bn."], [["TimeWarner said sales rose 2% to $11bn."]])  # ['2%']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from robustlab.core.registry import models
from robustlab.core.types import Capabilities, PositiveInt

_STRIP = re.compile(r"^\W+|\W+$")


def _norm(w: str) -> str:
    return _STRIP.sub("", w.lower())


class ClozeReader:
    """Extractive cloze reader over passages (``read``); ``max_run`` caps each context run."""

    def __init__(self, max_run: int = 4) -> None:
        self.max_run = max_run
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)

    def _scan(self, question: str, passages: Sequence[str]) -> list[tuple[float, str]]:
        """(alignment score, candidate token) of every aligned passage position, in order."""
        from robustlab.data.qa import NUMBER

        left, _, right = question.partition("___")
        lw = [_norm(w) for w in left.split()][::-1][: self.max_run]
        rw = [_norm(w) for w in right.split()][: self.max_run]
        out = []
        for text in passages:
            words = text.split()
            norm = [_norm(w) for w in words]
            for i, w in enumerate(words):
                run_l = 0
                while run_l < len(lw) and i - 1 - run_l >= 0 and norm[i - 1 - run_l] == lw[run_l]:
                    run_l += 1
                run_r = 0
                while run_r < len(rw) and i + 1 + run_r < len(norm) and norm[i + 1 + run_r] == rw[run_r]:  # fmt: skip
                    run_r += 1
                if run_l + run_r:
                    tok = w.rstrip(",.;:)").lstrip("(")
                    out.append((run_l + run_r + (0.5 if NUMBER.fullmatch(tok) else 0.0), tok))
        return out

    def read(self, questions: Sequence[str], passages: Sequence[Sequence[str]]) -> list[str]:
        """The best-aligned token per question (first on ties; ``unknown`` if nothing aligns)."""
        out = []
        for q, p in zip(questions, passages, strict=True):
            cands = self._scan(q, p)
            best = max((c[0] for c in cands), default=0.0)
            out.append(next((t for sc, t in cands if sc == best), "unknown"))
        return out

    def answer_scores(self, questions: Sequence[str], passages: Sequence[Sequence[str]],
                      refs: Sequence[str]) -> list[float]:  # fmt: skip
        """The reader's graded support for the reference: ``h / (h + o)`` with ``h`` the best
        alignment score of a position holding the reference and ``o`` the best of any other
        position (1 = no competitor, > 0.5 = the reference wins, 0 = absent). GARAG's reader
        objective when available (the analogue of the answer likelihood)."""
        from robustlab.metrics.failsafe import contains

        out = []
        for q, p, r in zip(questions, passages, refs, strict=True):
            cands = self._scan(q, p)
            hit = max((sc for sc, t in cands if contains(t, r)), default=0.0)
            other = max((sc for sc, t in cands if not contains(t, r)), default=0.0)
            out.append(hit / (hit + other) if hit > 0 else 0.0)
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256(f"cloze-reader|{self.max_run}".encode()).hexdigest()[:16]


@models.register("cloze-reader")
def cloze_reader(max_run: PositiveInt = 4) -> ClozeReader:
    """Extractive cloze reader: the passage token aligned with the question's ``___`` blank."""
    return ClozeReader(max_run)
