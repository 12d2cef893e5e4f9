"""Character-, word- and sentence-level text perturbations on real BBC News text.

Checked: the perturbation contract on BBC sentences (with names, numbers, contractions), each
edit's definition against an independent reading of its source (codespell's dictionary file,
the OCR table, MiniLM's embedding matrix, WordNet), invariants (multisets, displacement bounds,
round trips), the edit rate, clear errors, and the effect on a TF-IDF classifier (accuracy falls
with severity; exactly invariant under the edits a lower-cased bag of words cannot see).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
import torch

from robustlab.attacks.text import word_edit_rate
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.text import WordDraws, draws
from robustlab.testing import check_perturbation

NEW = ["char_swap", "char_delete", "char_insert", "ocr", "misspelling", "embedding_swap",
       "casing", "contractions", "names", "numbers", "local_shuffle", "dilution"]  # fmt: skip


NUM = r"\d[\d,]*\d|\d"


def rng(n: int, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, torch.arange(n))


@pytest.fixture(scope="module")
def bbc() -> Any:
    return datasets.create("bbc-news", {"split": "test", "max_words": 20})


@pytest.fixture(scope="module")
def leads() -> list[str]:
    from robustlab.data.ranking.bbc import articles

    return [a["lead"] for a in articles()[::7]][:300]


@pytest.mark.parametrize("name", NEW)
def test_contract_on_bbc_sentences(name: str, leads: list[str]) -> None:
    x = leads[:40] + ["", "a", "It's 5 o'clock, Tony Blair isn't here."]
    check_perturbation(perturbations.create(name), x)


def test_word_draws_equal_padded_draws() -> None:
    texts = [["w"] * n for n in (0, 3, 17, 1, 40)]
    d = WordDraws(rng(5, 3), [len(t) for t in texts], 4)
    ref = draws(rng(5, 3), texts, 4)
    mask = torch.arange(ref.shape[1]) < torch.tensor([len(t) for t in texts])[:, None]
    for c in range(4):
        assert torch.equal(d.at(d.text, d.word, c), ref[..., c][mask])


def _core(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word).lower()


def _changed(x: list[str], out: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for s, t in zip(x, out, strict=True)
            for a, b in zip(s.split(), t.split(), strict=True) if a != b]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "delta"), [("char_swap", 0), ("char_delete", -1), ("char_insert", 1)]
)
def test_char_edits_and_edit_rate(name: str, delta: int, leads: list[str]) -> None:
    out = perturbations.create(name)(leads, 0.3, rng(len(leads)))
    pairs = _changed(leads, out)
    assert all(len(b) - len(a) == delta for a, b in pairs)
    if name == "char_swap":  # same letters, same first letter
        assert all(sorted(a) == sorted(b) and a[0] == b[0] for a, b in pairs)
    rate = float(word_edit_rate(leads, out).mean())
    assert 0.2 < rate <= 0.32  # 30% of words picked; a few are too short to edit


def test_ocr_edits_come_from_the_table(leads: list[str]) -> None:
    from robustlab.perturbations.text.chars import OCR_CONFUSIONS

    out = perturbations.create("ocr")(leads, 0.5, rng(len(leads)))
    pairs = _changed(leads, out)
    assert len(pairs) > 1000
    for a, b in pairs:
        ok = any(a[:i] + new + a[i + len(old) :] == b
                 for old, subs in OCR_CONFUSIONS.items() for new in subs
                 for i in [m.start() for m in re.finditer(re.escape(old), a)])  # fmt: skip
        assert ok, (a, b)


def test_misspellings_are_codespell_pairs(leads: list[str]) -> None:
    from robustlab.perturbations.text.chars import codespell_path

    pairs = set(codespell_path().read_text(encoding="utf-8").lower().splitlines())
    out = perturbations.create("misspelling")(leads, 1.0, rng(len(leads)))
    changed = _changed(leads, out)
    assert len(changed) > 300
    for a, b in changed:
        a, b = _core(a), _core(b)
        assert f"{b}->{a}" in pairs, (a, b)


def test_embedding_neighbours_match_minilm_matrix(leads: list[str]) -> None:
    from robustlab.perturbations.text.embedding import _minilm, neighbour_table

    table = neighbour_table()
    vocab, emb, _ = _minilm()  # reference: cosine straight from the embedding matrix
    idx = {w: i for i, w in enumerate(vocab)}
    for w in ("market", "profit", "election", "film"):
        for nb, sim in table[w][:3]:
            ref = torch.cosine_similarity(emb[idx[w]], emb[idx[nb]], dim=0)
            assert abs(float(ref) - sim) < 1e-3
    assert "bad" not in dict(table["good"]) and "decrease" not in dict(table["increase"])
    out = perturbations.create("embedding_swap")(leads, 0.5, rng(len(leads)))
    for a, b in _changed(leads, out):
        a, b = _core(a), _core(b)
        assert dict(table[a])[b] >= 0.5


def test_casing_contractions_round_trip(leads: list[str]) -> None:
    out = perturbations.create("casing")(leads, 0.5, rng(len(leads)))
    assert [t.lower() for t in out] == [" ".join(t.split()).lower() for t in leads]
    x = ["We do not know if it is true, and they are not sure. I am here; you will see."]
    c = perturbations.create("contractions", {"direction": "contract"})(x, 1.0, rng(1))
    assert c == ["We don't know if it's true, and they're not sure. I'm here; you'll see."]
    assert perturbations.create("contractions", {"direction": "expand"})(c, 1.0, rng(1)) == x
    assert perturbations.create("contractions")(c, 1.0, rng(1)) == x  # both: each phrase flips


def test_names_consistent_and_numbers_bounded() -> None:
    from robustlab.perturbations.text.entities import FEMALE, MALE

    x = [
        "Tony Blair told Sarah that Tony would call Blair's office on 12 May 2005 about 1,500 jobs."
    ]
    out = perturbations.create("names")(x, 1.0, rng(1))[0]
    w, v = x[0].split(), out.split()
    assert v[0] == v[5] != "Tony" and v[0] in MALE and v[3] in FEMALE and v[3] != "Sarah"
    assert v[1] != "Blair" and v[8] == v[1] + "'s" and w[9:] == v[9:]
    nums = perturbations.create("numbers", {"spread": 0.5})(x * 50, 1.0, rng(50))
    for t in nums:
        a, b = re.findall(NUM, x[0]), re.findall(NUM, t)
        assert b[1] == "2005" and re.sub(NUM, "#", t) == re.sub(NUM, "#", x[0])
        for old, new in ((a[0], b[0]), (a[2], b[2])):
            o, n = int(old.replace(",", "")), int(new.replace(",", ""))
            assert n != o and 0.5 * o - 1 <= n <= 1.5 * o + 1


def test_local_shuffle_moves_words_at_most_window(leads: list[str]) -> None:
    out = perturbations.create("local_shuffle", {"window": 2})(leads, 0.5, rng(len(leads)))
    assert any(a != b for a, b in zip(leads, out, strict=True))
    for a, b in zip(leads, out, strict=True):
        wa, wb = a.split(), b.split()
        assert Counter(wa) == Counter(wb)
        if len(set(wa)) == len(wa):
            assert all(abs(wb.index(w) - i) <= 2 for i, w in enumerate(wa))


def test_dilution_keeps_the_text_and_inserts_enough(leads: list[str]) -> None:
    from robustlab.perturbations.text.dilution import wordnet_examples

    pool = set(wordnet_examples())
    out = perturbations.create("dilution")(leads, 0.5, rng(len(leads)))
    for a, b in zip(leads, out, strict=True):
        added = [s for s in re.split(r"(?<=[.!?])\s+", b) if s in pool]
        kept = [s for s in re.split(r"(?<=[.!?])\s+", b) if s not in pool]
        assert " ".join(kept) == " ".join(a.split())
        assert sum(len(s.split()) for s in added) >= 0.5 * len(a.split())
    own = perturbations.create("dilution", {"sentences": ["Unrelated filler sentence here."]})
    assert own(["Shares rose."], 1.0, rng(1))[0].count("Unrelated filler") == 1


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="list of strings"):
        perturbations.create("ocr")("not a list", 0.1, rng(1))
    with pytest.raises(ConfigError, match="edit rate"):
        perturbations.create("char_swap")(["a b"], 1.5, rng(1))
    with pytest.raises(ConfigError, match="direction"):
        perturbations.create("contractions", {"direction": "sideways"})
    with pytest.raises(ConfigError, match="mode"):
        perturbations.create("casing", {"mode": "camel"})
    with pytest.raises(ConfigError, match="source"):
        perturbations.create("dilution", {"source": "nowhere"})
    with pytest.raises(ConfigError, match="spread"):
        perturbations.create("numbers", {"spread": 2})


def test_tfidf_accuracy_falls_with_severity(bbc: Any) -> None:
    clf = models.create("tfidf-logreg")
    x, y = list(bbc.x), bbc.y

    def acc(p: Any, s: float) -> float:
        out = p(x, s, ExampleRNG.from_seed(0, bbc.ids)) if s else x
        return float((clf.logits(out).argmax(1) == y).double().mean())

    clean = acc(None, 0)
    for name in ["typo", "char_swap", "char_delete", "char_insert", "ocr", "misspelling",
                 "synonym", "embedding_swap", "word_deletion", "dilution"]:  # fmt: skip
        # the substitutions without the issue-18 meaning constraints (the measured table in
        # docs/text-perturbations.md; constrained runs: tests/test_text_constraints.py)
        unconstrained = name in ("synonym", "embedding_swap")
        p = perturbations.create(name, {"constraints": False} if unconstrained else None)
        curve = [clean] + [acc(p, s) for s in (0.1, 0.3, 0.5, 1.0)]
        assert all(b <= a + 0.01 for a, b in zip(curve, curve[1:], strict=False)), (name, curve)
        assert curve[-1] < clean - 0.05, (name, curve)
    pred = clf.logits(x).argmax(1)
    for name in ["word_order", "local_shuffle", "casing"]:  # a lower-cased bag of words is blind
        out = perturbations.create(name)(x, 0.5, ExampleRNG.from_seed(0, bbc.ids))
        assert torch.equal(clf.logits(out).argmax(1), pred), name


def test_hand_checked_sample_still_matches_and_keeps_labels() -> None:
    """``tests/data/text_label_check.jsonl``: 30 texts (20 BBC leads, 4 per topic; 10 airline /
    festival tweets with a clear sentiment) x 12 perturbations at severity 0.3, plus 10 BBC
    sentences with names/numbers/contractions at severity 1.0, each read by hand and judged
    ``kept`` (a reader gives the original label), ``changed`` or ``unclear``. The perturbed texts
    are regenerated here: a change to a perturbation invalidates the verdicts (redo the review)."""
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in
            (Path(__file__).parent / "data" / "text_label_check.jsonl").open(encoding="utf-8")]  # fmt: skip
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["perturbation"], r["severity"]), []).append(r)
    for (name, s), rs in groups.items():
        ids = torch.tensor([r["example"] for r in rs])
        # the verdicts were given on embedding_swap's outputs before the issue-18 constraints
        params = {"constraints": False} if name == "embedding_swap" else None
        out = perturbations.create(name, params)(
            [r["original"] for r in rs], s, ExampleRNG.from_seed(0, ids)
        )
        assert out == [r["perturbed"] for r in rs], (
            f"{name} output changed: review the sample again"
        )
    edited = [r for r in rows if r["verdict"] != "unchanged"]
    assert len(edited) >= 250 and not [r for r in edited if r["verdict"] == "changed"]
    assert sum(r["verdict"] == "kept" for r in edited) / len(edited) >= 0.99
