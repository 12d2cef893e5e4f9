"""Adversarial text attacks on classifiers: word-level edits within an edit-rate budget.

Protocol (called by :meth:`robustlab.tasks.classification.ClassificationTask.attack` when the
inputs are texts)::

    attack(model, x: list[str], y: LongTensor, budget: float, *, rng: ExampleRNG) -> TextAttackResult

``budget`` is the largest share of a text's words the attack may change (its edit rate, measured by
:func:`word_edit_rate`). An attack declares ``modality = "text"`` and ``threat = "edit"``.
``queries`` counts model calls per example: one text scored is one query. Success is re-checked by
the task on the returned texts (a misclassification of a clean-correct example).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TextAttackResult:
    """Adversarial texts, per-example success/queries, and extra per-example columns."""

    x_adv: list[str]
    success: torch.Tensor  # bool [B]
    queries: torch.Tensor  # int64 [B]
    extra: dict[str, list[Any]] = field(default_factory=dict)


def word_levenshtein(a: list[str], b: list[str]) -> int:
    """Edit distance between two word sequences (substitution, insertion, deletion cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i]
        for j, wb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb)))
        prev = cur
    return prev[-1]


def word_edit_rate(orig: list[str], adv: list[str]) -> torch.Tensor:
    """Word-level Levenshtein distance of each pair divided by the original's word count.

    Words are whitespace-separated; an empty original counts as one word. Equal-length pairs
    (substitution attacks) take the fast path of counting differing positions, which equals the
    Levenshtein distance whenever at most substitutions happened and is never below it.
    """
    if len(orig) != len(adv):
        raise ValueError(f"word_edit_rate: {len(orig)} originals but {len(adv)} adversarial texts")
    out = []
    for o, a in zip(orig, adv, strict=True):
        wo, wa = o.split(), a.split()
        if len(wo) == len(wa):
            d = sum(x != y for x, y in zip(wo, wa, strict=True))
            if d > 1:  # a shift (insert + delete) may be cheaper than d substitutions
                d = min(d, word_levenshtein(wo, wa))
        else:
            d = word_levenshtein(wo, wa)
        out.append(d / max(1, len(wo)))
    return torch.tensor(out, dtype=torch.float64)
