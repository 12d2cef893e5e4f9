"""Word-level text perturbations for query shift (S1 task 2) and text robustness in general.

``typo`` (keyboard-style character edits: swap, drop, repeat or replace with a QWERTY neighbour),
``synonym`` (WordNet 3.0 synonym substitution), ``word_order`` (swap a word with its right
neighbour), ``local_shuffle`` (words move up to ``window`` places) and ``word_deletion``. Severity is the edit rate: each word is edited with that
probability (see :mod:`robustlab.perturbations.text`).

Example::

    typo = perturbations.create("typo")
    typo(["stock markets rally"], 0.3, ExampleRNG.from_seed(0, torch.arange(1)))
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, PositiveInt
from robustlab.perturbations.text import (
    SEVERITIES,
    WordDraws,
    check_texts,
    draws,
    match_case,
    vector,
)
from robustlab.perturbations.text.constraints import RECORD, constraints_from, record, substitute
from robustlab.perturbations.text.vector import Words

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS = {
    c: "".join(
        r2[j] for r2 in _ROWS[max(0, i - 1) : i + 2] for j in (k - 1, k, k + 1)
        if 0 <= j < len(r2) and r2[j] != c
    )
    for i, r in enumerate(_ROWS) for k, c in enumerate(r)
}  # fmt: skip
_WORD = re.compile(r"^(\W*)(\w+)(\W*)$")


def split_word(word: str) -> tuple[str, str, str] | None:
    """``(leading punctuation, word, trailing punctuation)``, or None for a word without letters."""
    if word.isalnum():
        return "", word, ""
    m = _WORD.match(word)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def typo_word(word: str, u_kind: float, u_pos: float, u_char: float) -> str:
    """One keyboard-style edit of ``word`` (words under 2 letters are kept)."""
    parts = split_word(word)
    if parts is None or len(parts[1]) < 2:
        return word
    pre, w, post = parts
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
    """Each word is picked with probability ``severity`` (column 0 of its draws); a picked word is
    rewritten by :meth:`one` (from its other ``per_word`` draws), or, for edits that move words,
    the whole text by :meth:`edit`. Only the picked words' draws leave the tensor.

    ``one`` and ``edit`` are the per-word specification; edits with a ``vectorised`` function
    (:mod:`robustlab.perturbations.text.vector`) rewrite all picked words of the batch at once with
    the same result, and word-moving edits override :meth:`edit_batch`."""

    modality = "text"
    level_domain = EDIT_RATE
    severities = SEVERITIES
    per_word = 1
    vectorised: Callable[[Words, np.ndarray], list[str]] | None = None

    def one(self, word: str, u: list[float]) -> str:
        raise NotImplementedError

    def edit(self, words: list[str], pick: list[bool]) -> list[str]:
        raise NotImplementedError

    def edit_words(self, words: list[str], u: np.ndarray) -> list[str]:
        """The picked ``words`` rewritten (``u``: their draws ``[k, per_word]``), as :meth:`one`."""
        fn = type(self).vectorised
        if fn is not None and words:
            try:
                return fn(Words(words), u)
            except UnicodeEncodeError:  # a lone surrogate: no UTF-32 code-point array
                pass
        return [self.one(w, v) for w, v in zip(words, u.tolist(), strict=True)]

    def edit_batch(
        self, flat: list[str], lengths: np.ndarray, pick: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """All words of the batch (``flat``, ``lengths`` per text) after :meth:`edit` per text,
        and the new number of words per text."""
        picks = np.split(pick, np.cumsum(lengths)[:-1]) if len(lengths) else []
        texts = [
            self.edit(w, p.tolist()) for w, p in zip(split_flat(flat, lengths), picks, strict=True)
        ]
        sizes = np.array([len(t) for t in texts], dtype=np.int64)
        return list(itertools.chain.from_iterable(texts)), sizes

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        texts = check_texts(x, severity, type(self).__name__)
        if severity == 0:
            return list(x)
        lengths = [len(t) for t in texts]
        d = WordDraws(rng, lengths, self.per_word + 1)
        sel = d.uniform(d.text_np, d.word_np, [0])[:, 0] < severity
        flat = list(itertools.chain.from_iterable(texts))
        if type(self).one is _WordEdit.one:
            flat, n = self.edit_batch(flat, np.array(lengths, dtype=np.int64), sel)
            return join_texts(flat, n, x)
        idx = np.flatnonzero(sel)
        u = d.uniform(d.text_np[idx], d.word_np[idx], range(1, self.per_word + 1))
        pos = idx.tolist()
        new = self.edit_words(list(map(flat.__getitem__, pos)), u)
        for k, w in zip(pos, new, strict=True):
            flat[k] = w
        return join_texts(flat, lengths, x)


def split_flat(flat: list[str], lengths: Sequence[int] | np.ndarray) -> list[list[str]]:
    """``flat`` cut into consecutive lists of ``lengths`` words."""
    ends = np.cumsum(lengths).tolist()
    return [flat[e - n : e] for e, n in zip(ends, np.asarray(lengths).tolist(), strict=True)]


def join_texts(flat: list[str], lengths: Sequence[int] | np.ndarray, x: Sequence[str]) -> list[str]:
    """Per text, its words (consecutive in ``flat``) joined by single spaces; a text without words
    is returned as it was."""
    out = list(map(" ".join, split_flat(flat, lengths)))
    for i in np.flatnonzero(np.asarray(lengths) == 0).tolist():
        out[i] = x[i]
    return out


@perturbations.register("typo")
class Typo(_WordEdit):
    """Keyboard typos in a share ``severity`` of the words (swap, drop, repeat, neighbour key)."""

    per_word = 3
    vectorised = staticmethod(vector.typo)

    def one(self, word: str, u: list[float]) -> str:
        return typo_word(word, *u)


@perturbations.register("synonym")
class Synonym(_WordEdit):
    """WordNet synonym substitution in a share ``severity`` of the words (words without
    synonyms are kept; punctuation and capitalisation preserved).

    ``constraints`` (issue 18, default on; :mod:`~robustlab.perturbations.text.constraints`):
    entities and numbers are kept, a synonym comes from the corpus-tagged WordNet senses of the
    word's part of speech in context and is inflected like it, and edits that break a constraint
    or the MiniLM similarity threshold are put back. ``constraints=False``: any synonym of any
    sense (:func:`~robustlab.perturbations.text.wordnet.synonyms_table`), as before issue 18."""

    record_extra = RECORD

    def __init__(self, constraints: bool | dict[str, Any] = True) -> None:
        self.constraints = constraints

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        cfg = constraints_from(self.constraints)
        check_texts(x, severity, "Synonym")
        if cfg is None or severity == 0 or not x:
            return super().__call__(x, severity, rng)
        return substitute(list(x), severity, rng, cfg, "wordnet")

    def record(self, x: list[str], out: list[str]) -> dict[str, list[Any]]:
        """Per-example record columns: whether each changed text passes the constraints."""
        return record(self.constraints, x, out)

    def one(self, word: str, u: list[float]) -> str:
        from robustlab.perturbations.text.wordnet import synonyms_table

        parts = split_word(word)
        syn = synonyms_table().get(parts[1].lower(), ()) if parts else ()
        if not syn:
            return word
        new = syn[min(int(u[0] * len(syn)), len(syn) - 1)]
        return parts[0] + match_case(new, parts[1]) + parts[2]  # type: ignore[index]


@perturbations.register("word_order")
class WordOrder(_WordEdit):
    """Swap a share ``severity`` of the words with their right neighbour (left to right)."""

    def edit(self, words: list[str], pick: list[bool]) -> list[str]:
        out = list(words)
        j = 0
        while j < len(out) - 1:
            if pick[j]:
                out[j], out[j + 1] = out[j + 1], out[j]
                j += 1
            j += 1
        return out

    def edit_batch(
        self, flat: list[str], lengths: np.ndarray, pick: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """:meth:`edit` on every text at once: a picked word that is not its text's last swaps
        unless its left neighbour just swapped into it, i.e. every other one of a run of such
        words, from the run's start (runs end at each text's last word, which never swaps)."""
        last = np.cumsum(lengths) - 1
        can = pick.copy()
        can[last[lengths > 0]] = False
        idx = np.arange(len(can))
        start = can & np.concatenate(([True], ~can[:-1]))
        first = np.maximum.accumulate(np.where(start, idx, 0)) if len(can) else idx
        j = np.flatnonzero(can & ((idx - first) % 2 == 0))
        order = idx.copy()
        order[j], order[j + 1] = j + 1, j
        return list(map(flat.__getitem__, order.tolist())), lengths


@perturbations.register("word_deletion")
class WordDeletion(_WordEdit):
    """Delete a share ``severity`` of the words (at least one word is kept)."""

    def edit(self, words: list[str], pick: list[bool]) -> list[str]:
        kept = [w for j, w in enumerate(words) if not pick[j]]
        return kept or words[:1]

    def edit_batch(
        self, flat: list[str], lengths: np.ndarray, pick: np.ndarray
    ) -> tuple[list[str], np.ndarray]:
        """:meth:`edit` on every text at once: the words not picked, or the first word of a text
        whose words were all picked."""
        keep = ~pick
        ends = np.cumsum(lengths)
        first = ends - lengths
        c = np.concatenate(([0], np.cumsum(keep)))
        none = (lengths > 0) & (c[ends] == c[first])
        keep[first[none]] = True
        c = np.concatenate(([0], np.cumsum(keep)))
        return list(itertools.compress(flat, keep.tolist())), c[ends] - c[first]


@perturbations.register("local_shuffle")
class LocalShuffle:
    """Move a share ``severity`` of the words up to ``window`` places to the right (the word-order
    noise of Lample et al., ICLR 2018: sort by ``j + U(0, window + 1)`` for the picked words ``j``;
    the other words keep their keys ``j``, so they only move to let the picked words pass)."""

    modality = "text"
    level_domain = EDIT_RATE
    severities = SEVERITIES

    def __init__(self, window: PositiveInt = 3) -> None:
        if window < 1:
            raise ConfigError(f"local_shuffle window must be >= 1, got {window}")
        self.window = window

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        texts = check_texts(x, severity, "local_shuffle")
        if severity == 0:
            return list(x)
        u = draws(rng, texts, 2)
        n = torch.tensor([len(t) for t in texts])
        j = torch.arange(u.shape[1], dtype=torch.float64)
        keys = j + (u[..., 0] < severity) * u[..., 1] * (self.window + 1)
        keys = keys.masked_fill(j >= n[:, None], float("inf"))
        order = keys.argsort(dim=1, stable=True).tolist()
        return [
            " ".join(w[k] for k in order[i][: len(w)]) if w else x[i] for i, w in enumerate(texts)
        ]
