"""Deterministic text normalisers (the inverse direction of the noise perturbations), used as
rule-based rewrites by the LLM-TTA defence (:mod:`robustlab.defenses.llm_tta`).

* :func:`spellfix` replaces words found in codespell's misspelling dictionary by their correction.
* :func:`spellcheck` corrects out-of-vocabulary words at edit distance 1 (one deletion, insertion,
  substitution or adjacent swap) from a word of the all-MiniLM-L6-v2 WordPiece vocabulary (about
  21,700 lower-case whole words), with the symmetric-delete index of SymSpell (Garbe, 2012): a word
  and its one-letter deletions are looked up in a table of the vocabulary's one-letter deletions.
  Among several candidates the most frequent (lowest vocabulary id, WordPiece orders roughly by
  frequency) wins. Words of 1-2 letters, and capitalised words inside a text (names), are kept.

Example::

    spellcheck(["Teh govermnent siad profits rsoe"])   # ['The government said profits rose']
"""

from __future__ import annotations

import functools
import re

from robustlab.perturbations.text import match_case

_TOKEN = re.compile(r"[A-Za-z]+")


@functools.lru_cache(maxsize=1)
def _corrections() -> dict[str, str]:
    """``{misspelling: correction}`` (misspellings that are themselves correct words excluded)."""
    from robustlab.perturbations.text.chars import misspellings_table

    table = misspellings_table()
    return {w: r for r, ws in table.items() for w in ws if w not in table}


def spellfix(texts: list[str]) -> list[str]:
    """Replace every word found in codespell's misspelling dictionary by its correction."""
    fix = _corrections()

    def sub(m: re.Match[str]) -> str:
        right = fix.get(m.group().lower())
        return match_case(right, m.group()) if right else m.group()

    return [_TOKEN.sub(sub, t) for t in texts]


def _deletes(w: str) -> list[str]:
    return [w[:i] + w[i + 1 :] for i in range(len(w))]


@functools.lru_cache(maxsize=1)
def _index() -> tuple[list[str], dict[str, int], dict[str, list[int]]]:
    """(vocabulary, word -> rank, one-letter deletion -> ranks of the words it comes from)."""
    from robustlab.perturbations.text.embedding import _minilm

    vocab = _minilm()[0]
    words = {w: i for i, w in enumerate(vocab) if w.isascii() and w.isalpha() and w.islower()}
    dels: dict[str, list[int]] = {}
    for w, i in words.items():
        for d in set(_deletes(w)):
            dels.setdefault(d, []).append(i)
    return vocab, words, dels


@functools.lru_cache(maxsize=1 << 16)
def _correct(w: str) -> str:
    vocab, words, dels = _index()
    if w in words:
        return w
    cands = list(dels.get(w, ()))  # a letter missing from w
    for d in set(_deletes(w)):
        cands += [words[d]] if d in words else []  # a letter too many
        cands += dels.get(d, ())  # a letter changed, or two swapped (checked below)
    best = min((i for i in cands if _close(w, vocab[i])), default=None)
    return vocab[best] if best is not None else w


def _close(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance of ``a`` and ``b`` is at most 1 (deletes can pair farther)."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) <= 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def spellcheck(texts: list[str]) -> list[str]:
    """Correct lower-case out-of-vocabulary words at edit distance 1 (see module doc)."""

    def sub(m: re.Match[str]) -> str:
        w = m.group()
        if len(w) <= 2 or not w[1:].islower() or w[0].isupper() and m.start() > 0:
            return w
        return match_case(_correct(w.lower()), w)

    return [_TOKEN.sub(sub, t) for t in texts]
