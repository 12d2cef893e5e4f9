"""Text classification through the classification task: edit-rate measure, checks, attacks."""

from __future__ import annotations

import random
from functools import cache

import pytest
import torch

from robustlab.attacks.text import word_edit_rate
from robustlab.core.errors import ConfigError
from robustlab.core.registry import tasks
from robustlab.data.base import Dataset


def _definitional(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Levenshtein distance by its recursive definition (an independent reference)."""

    @cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def test_word_edit_rate_matches_the_definition() -> None:
    r = random.Random(0)
    vocab = ["the", "cat", "sat", "on", "a", "mat", "dog"]
    orig, adv, want = [], [], []
    for _ in range(300):
        a = [r.choice(vocab) for _ in range(r.randint(0, 7))]
        b = [r.choice(vocab) for _ in range(r.randint(0, 7))] if r.random() < 0.5 else list(a)
        if b and r.random() < 0.5:
            b[r.randrange(len(b))] = r.choice(vocab)
        orig.append(" ".join(a))
        adv.append(" ".join(b))
        want.append(_definitional(tuple(a), tuple(b)) / max(1, len(a)))
    got = word_edit_rate(orig, adv)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64))
    # a shifted sentence is one deletion + one insertion, not n substitutions
    assert word_edit_rate(["a b c d e f"], ["b c d e f a"]).item() == pytest.approx(2 / 6)


def test_text_classification_check_refuses_non_strings() -> None:
    task = tasks.create("classification")
    with pytest.raises(ConfigError, match="list of strings"):
        task.check(None, Dataset(["ok", b"bytes"], torch.tensor([0, 1])))  # type: ignore[list-item]
