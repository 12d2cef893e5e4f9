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

from typing import Any

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
    """

    def __init__(self, rng: ExampleRNG, lengths: list[int], per_word: int) -> None:
        self.base = rng.draw_base()
        self.per_word = per_word
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.text = torch.repeat_interleave(torch.arange(len(lengths)), self.lengths)
        start = torch.cumsum(self.lengths, 0) - self.lengths
        self.word = torch.arange(len(self.text)) - start[self.text]

    def at(self, text: torch.Tensor, word: torch.Tensor, col: int) -> torch.Tensor:
        """float64 uniforms for ``(text[i], word[i], col)``, equal to ``draws(...)[t, w, col]``."""
        j = word * self.per_word + col
        return ExampleRNG.uniform_at(self.base[text], j, torch.float64)


def match_case(new: str, old: str) -> str:
    """``new`` capitalised like ``old`` (all caps / first letter / as is)."""
    if old.isupper() and len(old) > 1:
        return new.upper()
    return new[:1].upper() + new[1:] if old[:1].isupper() else new
