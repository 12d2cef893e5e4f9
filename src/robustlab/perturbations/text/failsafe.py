"""FailSafeQA perturbations (Kamble et al., 2025, "Expect the Unexpected: FailSafe Long Context QA").

Query failures (``field = "question"``): ``query_misspelled`` (real misspellings from the codespell
dictionary, a keyboard typo where none is known), ``query_incomplete`` (a contiguous run of
``severity`` x the words is cut, as in a query typed in a hurry; a cloze blank ``___`` is kept),
``query_out_of_domain`` (expert terms swapped for lay phrasing from :data:`LAY_TERMS`, and a
casual opener). Context failures (``field = "context"``): ``context_ocr`` (OCR confusions in a
share ``severity`` of the words, plus merged words), ``context_irrelevant`` (the context replaced,
with probability ``severity``, by an unrelated BBC passage from outside the QA corpus) and
``context_missing`` (the context emptied with probability ``severity``). The last two make an
example unanswerable (``answerable = False``): a grounded model should then refuse.

All are ``list[str] -> list[str]`` (modality text) with per-example random streams; the ``rag`` task
applies each to its ``field`` of the QA examples.

Example::

    p = perturbations.create("context_ocr")
    p(["Sales rose 2% in the quarter."], 0.5, ExampleRNG.from_seed(0, torch.arange(1)))
"""

from __future__ import annotations

import functools

import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE
from robustlab.perturbations.text import check_texts, draws, match_case

LAY_TERMS = {
    "shares": "stocks", "profit": "money made", "profits": "money made", "revenue": "money coming in",
    "revenues": "money coming in", "quarter": "three months", "fiscal": "money", "firm": "company",
    "dividend": "payout", "investors": "people who invest", "inflation": "rising prices",
    "economy": "money situation", "deficit": "shortfall", "GMT": "UK time", "annual": "yearly",
    "sales": "stuff sold", "growth": "increase", "output": "production", "unemployment":
    "people out of work", "subscribers": "users", "acquired": "bought", "merger": "joining up",
}  # fmt: skip
OPENERS = ("hey, quick question:", "so basically", "can you tell me", "not sure about this but")
_BLANK = "___"


class _Failsafe:
    modality = "text"
    level_domain = EDIT_RATE
    severities: tuple[float, ...] = (0.1, 0.3, 0.5)
    field = "question"
    answerable = True


@perturbations.register("query_misspelled")
class QueryMisspelled(_Failsafe):
    """Misspell a share ``severity`` of the query's words (codespell's real misspellings; a keyboard
    typo for words without one)."""

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        from robustlab.perturbations.text.chars import misspellings_table
        from robustlab.perturbations.text.words import split_word, typo_word

        texts = check_texts(x, severity, "query_misspelled")
        if severity == 0:
            return list(x)
        u = draws(rng, texts, 4).tolist()
        table, out = misspellings_table(), []
        for i, words in enumerate(texts):
            new = []
            for j, w in enumerate(words):
                if u[i][j][0] < severity and _BLANK not in w:
                    parts = split_word(w)
                    alts = table.get(parts[1].lower(), ()) if parts else ()
                    if alts:
                        m = alts[min(int(u[i][j][1] * len(alts)), len(alts) - 1)]
                        w = parts[0] + match_case(m, parts[1]) + parts[2]  # type: ignore[index]
                    else:
                        w = typo_word(w, *u[i][j][1:])
                new.append(w)
            out.append(" ".join(new) if words else x[i])
        return out


@perturbations.register("query_incomplete")
class QueryIncomplete(_Failsafe):
    """Cut a contiguous run of ``round(severity * n)`` words (not the ``___`` blank) from the query."""

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        texts = check_texts(x, severity, "query_incomplete")
        if severity == 0:
            return list(x)
        u = rng.uniform(1, dtype=torch.float64).tolist()
        out = []
        for i, words in enumerate(texts):
            cut = round(severity * len(words))
            if not cut:
                out.append(x[i])
                continue
            b = next((j for j, w in enumerate(words) if _BLANK in w), None)
            # candidate starts whose run avoids the blank
            starts = [s for s in range(len(words) - cut + 1) if b is None or not s <= b < s + cut]
            if not starts:
                starts, cut = [b + 1] if b + 1 < len(words) else [0], len(words) - b - 1  # type: ignore[operator]
            s = starts[min(int(u[i][0] * len(starts)), len(starts) - 1)]
            out.append(" ".join(words[:s] + words[s + cut :]))
        return out


@perturbations.register("query_out_of_domain")
class QueryOutOfDomain(_Failsafe):
    """Lay phrasing: each expert term of :data:`LAY_TERMS` swapped with probability ``severity``,
    and (with probability ``severity``) a casual opener."""

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        from robustlab.perturbations.text.words import split_word

        texts = check_texts(x, severity, "query_out_of_domain")
        if severity == 0:
            return list(x)
        u = draws(rng, texts, 1).tolist()
        w0 = rng.uniform(2, dtype=torch.float64).tolist()
        out = []
        for i, words in enumerate(texts):
            new = []
            for j, w in enumerate(words):
                parts = split_word(w)
                lay = LAY_TERMS.get(parts[1]) or LAY_TERMS.get(parts[1].lower()) if parts else None
                new.append(parts[0] + lay + parts[2] if lay and u[i][j][0] < severity else w)  # type: ignore[index]
            if severity and w0[i][0] < severity:
                new.insert(0, OPENERS[min(int(w0[i][1] * len(OPENERS)), len(OPENERS) - 1)])
            out.append(" ".join(new) if words else x[i])
        return out


@perturbations.register("context_ocr")
class ContextOCR(_Failsafe):
    """OCR-degraded context: OCR confusions (``ocr``) in a share ``severity`` of the words, and
    with probability ``severity / 4`` per word a lost space (merged with the next word)."""

    field = "context"

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        from robustlab.core.registry import perturbations as reg

        texts = check_texts(x, severity, "context_ocr")
        if severity == 0:
            return list(x)
        noisy = reg.create("ocr")(list(x), severity, rng)
        u = draws(rng.fork("merge"), texts, 1).tolist()
        out = []
        for i, t in enumerate(noisy):
            words = t.split()
            merged: list[str] = []
            for j, w in enumerate(words):
                if merged and j - 1 < len(u[i]) and u[i][j - 1][0] < severity / 4:
                    merged[-1] += w
                else:
                    merged.append(w)
            out.append(" ".join(merged) if words else t)
        return out


@functools.lru_cache(maxsize=1)
def irrelevant_pool() -> tuple[str, ...]:
    """First three sentences of the BBC articles outside the default QA corpus (sorted by key)."""
    from robustlab.data.qa import _build, sentences
    from robustlab.data.ranking.bbc import articles

    used = {i.split("#")[0] for i in _build(300, 3)[0]}
    return tuple(" ".join(sentences(a["doc"])[:3]) for a in articles() if a["key"] not in used)


@perturbations.register("context_irrelevant")
class ContextIrrelevant(_Failsafe):
    """Replace the context, with probability ``severity``, by an unrelated BBC passage."""

    field, answerable, severities = "context", False, (0.5, 1.0)

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        check_texts(x, severity, "context_irrelevant")
        pool = irrelevant_pool() if severity else ()
        u = rng.uniform(2, dtype=torch.float64).tolist()
        return [pool[min(int(u[i][1] * len(pool)), len(pool) - 1)] if u[i][0] < severity else t
                for i, t in enumerate(x)]  # fmt: skip


@perturbations.register("context_missing")
class ContextMissing(_Failsafe):
    """Empty the context with probability ``severity`` (an empty upload / nothing retrieved)."""

    field, answerable, severities = "context", False, (0.5, 1.0)

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        check_texts(x, severity, "context_missing")
        u = rng.uniform(1, dtype=torch.float64).tolist()
        return ["" if u[i][0] < severity else t for i, t in enumerate(x)]
