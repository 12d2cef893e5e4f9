"""Text perturbations: ``list[str] -> list[str]``, severity = edit rate (share of words edited).

Each word of each text is edited independently with probability ``severity`` using the text's own
random stream (:class:`~robustlab.core.rng.ExampleRNG`): a text's output does not depend on the other
texts of its batch. Severity 0 is the identity. Reusable for any text task (ranking queries,
classification inputs, prompts). Words are whitespace-separated; punctuation stays attached.

Modules: ``words`` (typo, synonym, word_order, local_shuffle, word_deletion), ``chars``
(char_swap, char_delete, char_insert, ocr, misspelling), ``embedding`` (embedding_swap),
``style`` (casing, contractions), ``entities`` (names, numbers), ``dilution`` (distractor
sentences), ``paraphrase`` (local LLM). Word edits draw their numbers through :class:`WordDraws`
(only the words a batch really has), the same numbers as :func:`draws`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG

SEVERITIES = (0.1, 0.2, 0.3, 0.5)


def check_texts(x: Any, severity: float, name: str) -> list[list[str]]:
    """Validate a batch of texts and the edit rate; return the texts split into words."""
    if not isinstance(x, list | tuple) or not all(isinstance(t, str) for t in x):
        raise ConfigError(f"{name} needs a list of strings, got {type(x).__name__}")
    if not 0 <= severity <= 1:
        raise ConfigError(f"{name} severity is an edit rate in [0, 1], got {severity}")
    return [t.split() for t in x]


def draws(rng: ExampleRNG, texts: list[list[str]], per_word: int) -> torch.Tensor:
    """Uniforms ``[B, W, per_word]`` (W = most words in the batch); column ``j`` of a text is the
    same in any batch, since the stream's element index does not depend on ``W``."""
    w = max((len(t) for t in texts), default=0)
    return rng.uniform(max(w, 1) * per_word, dtype=torch.float64).view(len(texts), -1, per_word)


class WordDraws:
    """The numbers of :func:`draws` ``[B, W, per_word]`` without the padding to ``W``: uniforms for
    any (text, word, column) triple, computed on demand from the counter-based hash, so a batch of
    texts of very different lengths costs only its real words (checked equal to :func:`draws`).

    Uses one draw of the stream (:meth:`ExampleRNG.draw_base` / :meth:`ExampleRNG.uniform_at`).
    :meth:`uniform` computes the same numbers in numpy (the same integer hash on ``uint64``; no
    per-op tensor overhead) for the perturbations' hot path; ``text``/``word`` (torch) and
    ``text_np``/``word_np`` index every word of the batch.
    """

    def __init__(self, rng: ExampleRNG, lengths: list[int], per_word: int) -> None:
        self.base = rng.draw_base()
        self.base_np = self.base.cpu().numpy().astype(np.uint64)
        self.per_word = per_word
        n = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.text_np = np.repeat(np.arange(len(n)), n)
        self.word_np = np.arange(len(self.text_np)) - np.repeat(np.cumsum(n) - n, n)
        self.lengths = torch.from_numpy(n)

    @property
    def text(self) -> torch.Tensor:
        """Text index of every word of the batch."""
        return torch.from_numpy(self.text_np)

    @property
    def word(self) -> torch.Tensor:
        """Index of every word of the batch within its text."""
        return torch.from_numpy(self.word_np)

    def at(self, text: torch.Tensor, word: torch.Tensor, col: int) -> torch.Tensor:
        """float64 uniforms for ``(text[i], word[i], col)``, equal to ``draws(...)[t, w, col]``."""
        j = word * self.per_word + col
        return ExampleRNG.uniform_at(self.base[text], j, torch.float64)

    def uniform(self, text: np.ndarray, word: np.ndarray, cols: Sequence[int]) -> np.ndarray:
        """float64 ``[len(text), len(cols)]``: column ``k`` equals ``at(text, word, cols[k])``."""
        j = word[:, None] * self.per_word + np.asarray(cols, dtype=np.int64)[None, :]
        return uniform_at_np(self.base_np[text][:, None], j)


_M32 = np.uint64(0xFFFFFFFF)


def _hash32_np(x: np.ndarray) -> np.ndarray:
    """``robustlab.core.rng.hash32`` in place on a uint64 array of values in [0, 2**32)."""
    x ^= x >> np.uint64(16)
    x *= np.uint64(0x7FEB352D)
    x &= _M32
    x ^= x >> np.uint64(15)
    x *= np.uint64(0x846CA68B)
    x &= _M32
    x ^= x >> np.uint64(16)
    return x


def uniform_at_np(base: np.ndarray, index: np.ndarray) -> np.ndarray:
    """:meth:`ExampleRNG.uniform_at` (float64) in numpy: ``base`` uint64 keys, ``index`` int64
    element indices (broadcast); bit-identical (tested), since the hash is exact integer arithmetic
    modulo 2**32 in both."""
    j = index.astype(np.uint64) * np.uint64(0x9E3779B9)
    j &= _M32
    h = _hash32_np(j ^ base)
    h += base
    h &= _M32
    _hash32_np(h)
    h >>= np.uint64(8)
    return h.astype(np.float64) * (1.0 / (1 << 24))


def match_case(new: str, old: str) -> str:
    """``new`` capitalised like ``old`` (all caps / first letter / as is)."""
    if old.isupper() and len(old) > 1:
        return new.upper()
    return new[:1].upper() + new[1:] if old[:1].isupper() else new
