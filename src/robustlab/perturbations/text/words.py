"""Word-level text perturbations for query shift (S1 task 2) and text robustness in general.

``typo`` (keyboard-style character edits: swap, drop, repeat or replace with a QWERTY neighbour),
``synonym`` (WordNet 3.0 synonym substitution), ``word_order`` (swap a word with its right
neighbour) and ``word_deletion``. Severity is the edit rate: each word is edited with that
probability (see :mod:`robustlab.perturbations.text`).

Example::

    typo = perturbations.create("typo")
    typo(["stock markets rally"], 0.3, ExampleRNG.from_seed(0, torch.arange(1)))
"""

from __future__ import annotations

import re

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.text import SEVERITIES, check_texts, draws, match_case

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS = {
    c: "".join(
        r2[j] for r2 in _ROWS[max(0, i - 1) : i + 2] for j in (k - 1, k, k + 1)
        if 0 <= j < len(r2) and r2[j] != c
    )
    for i, r in enumerate(_ROWS) for k, c in enumerate(r)
}  # fmt: skip
_WORD = re.compile(r"^(\W*)(\w+)(\W*)$")


def typo_word(word: str, u_kind: float, u_pos: float, u_char: float) -> str:
    """One keyboard-style edit of ``word`` (words under 2 letters are kept)."""
    m = _WORD.match(word)
    if not m or len(m.group(2)) < 2:
        return word
    pre, w, post = m.groups()
    i = min(int(u_pos * len(w)), len(w) - 1)
    kind = int(u_kind * 4)
    if kind == 0 and len(w) > 2:  # swap with the next letter (the first letter stays)
        i = max(1, min(i, len(w) - 2))
        w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    elif kind == 1 and len(w) > 3:  # drop a letter
        w = w[:i] + w[i + 1 :]
    elif kind == 2:  # repeat a letter
        w = w[: i + 1] + w[i] + w[i + 1 :]
    else:  # replace by a keyboard neighbour
        nb = NEIGHBOURS.get(w[i].lower(), "")
        if nb:
            c = nb[min(int(u_char * len(nb)), len(nb) - 1)]
            w = w[:i] + (c.upper() if w[i].isupper() else c) + w[i + 1 :]
    return pre + w + post


class _WordEdit:
    modality = "text"
    severities = SEVERITIES
    per_word = 1

    def edit(self, words: list[str], pick: list[bool], u: list[list[float]]) -> list[str]:
        raise NotImplementedError

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        texts = check_texts(x, severity, type(self).__name__)
        if severity == 0:
            return list(x)
        u = draws(rng, texts, self.per_word + 1)
        pick = (u[..., 0] < severity).tolist()
        rest = u[..., 1:].tolist()
        return [
            " ".join(self.edit(w, pick[i][: len(w)], rest[i])) if w else x[i]
            for i, w in enumerate(texts)
        ]


@perturbations.register("typo")
class Typo(_WordEdit):
    """Keyboard typos in a share ``severity`` of the words (swap, drop, repeat, neighbour key)."""

    per_word = 3

    def edit(self, words: list[str], pick: list[bool], u: list[list[float]]) -> list[str]:
        return [typo_word(w, *u[j]) if pick[j] else w for j, w in enumerate(words)]


@perturbations.register("synonym")
class Synonym(_WordEdit):
    """WordNet synonym substitution in a share ``severity`` of the words (words without
    synonyms are kept; punctuation and capitalisation preserved)."""

    def edit(self, words: list[str], pick: list[bool], u: list[list[float]]) -> list[str]:
        from robustlab.perturbations.text.wordnet import synonyms_table

        table = synonyms_table()
        out = []
        for j, w in enumerate(words):
            m = _WORD.match(w)
            syn = table.get(m.group(2).lower(), ()) if m and pick[j] else ()
            if syn:
                new = syn[min(int(u[j][0] * len(syn)), len(syn) - 1)]
                w = m.group(1) + match_case(new, m.group(2)) + m.group(3)  # type: ignore[union-attr]
            out.append(w)
        return out


@perturbations.register("word_order")
class WordOrder(_WordEdit):
    """Swap a share ``severity`` of the words with their right neighbour (left to right)."""

    def edit(self, words: list[str], pick: list[bool], u: list[list[float]]) -> list[str]:
        out = list(words)
        j = 0
        while j < len(out) - 1:
            if pick[j]:
                out[j], out[j + 1] = out[j + 1], out[j]
                j += 1
            j += 1
        return out


@perturbations.register("word_deletion")
class WordDeletion(_WordEdit):
    """Delete a share ``severity`` of the words (at least one word is kept)."""

    def edit(self, words: list[str], pick: list[bool], u: list[list[float]]) -> list[str]:
        kept = [w for j, w in enumerate(words) if not pick[j]]
        return kept or words[:1]
