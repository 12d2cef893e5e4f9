"""Meaning-preservation constraints (issue 18): the audit's examples, the tagged-sense table against
NLTK's WordNet reader, constrained perturbations, and a real BBC run through the runner, the
records and the report section."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.attacks.text.common import Words, all_candidates
from robustlab.attacks.text.lexicon import synonyms
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.text.constraints import (
    Constraints,
    annotate,
    check,
    constraints_from,
    mark_edits,
    word_options,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXT = "General Motors said profits fall, and Federer won the Australian Open in 2004."
spacy_only = pytest.mark.skipif(
    __import__("robustlab.perturbations.text.constraints", fromlist=["x"]).spacy_pipeline() is None,
    reason="spaCy English pipeline not installed",
)


@pytest.mark.parametrize("tagger", ["rules", pytest.param("spacy", marks=spacy_only)])
def test_audit_entities_and_numbers_are_left_alone(tagger: str) -> None:
    cfg = Constraints(tagger=tagger)
    words = TEXT.split()
    opts = word_options([TEXT], cfg)[0]
    kept = {w for w, o in zip(words, opts, strict=True) if o is None}
    assert {"General", "Motors", "Federer", "Open", "2004."} <= kept
    assert opts[words.index("fall,")][0] == "v"  # tagged a verb in context
    # the attacks' candidates: none for the protected words, verbs only for "fall"
    atk = attacks.create("textfooler", {"constraints": {"tagger": tagger}})
    cands = all_candidates(atk, [Words(TEXT)])[0]
    assert cands[0] == cands[1] == cands[words.index("Open")] == []
    fall = [c.rstrip(",") for c in cands[words.index("fall,")]]
    assert "decrease," not in fall and "decrease" in fall and "autumn" not in fall
    assert "accrue" not in fall  # an untagged sense (19 of 32)
    # the same substitutions are refused by the after-the-fact check, with the reason
    bad = {
        "Oecumenical Motors said profits fall, and Federer won the Australian Open in 2004.": "entity,sense",
        "General Motors said profits accrue, and Federer won the Australian Open in 2004.": "sense",
        "General Motors said profits fall, and Federer won the Australian Loose in 2004.": "entity",
        "General Motors said profits fall, and Federer won the Australian Open in 2005.": "number",
    }  # fmt: skip
    res = check([TEXT] * len(bad), list(bad), cfg, min_similarity=0)
    assert res["constraints_pass"] == [0.0] * 4
    for got, want in zip(res["constraint_violations"], bad.values(), strict=True):
        assert set(want.split(",")) <= set(got.split(","))  # "accrue" may also be re-tagged
    ok = check([TEXT], [TEXT.replace("fall,", "decrease,")], cfg, min_similarity=0)
    assert ok["constraints_pass"] == [1.0] and ok["edits"][0].count("[-fall,-]") == 1
    # without constraints the old candidates come back (the audit's edits)
    old = attacks.create("textfooler", {"constraints": False})
    assert "oecumenical" in [c.lower() for c in all_candidates(old, [Words(TEXT)])[0][0]]


def test_options_and_bad_input() -> None:
    assert constraints_from(False) is None and constraints_from(True) == Constraints()
    assert constraints_from({"numbers": False}) == Constraints(numbers=False)
    with pytest.raises(ConfigError, match="unknown constraints"):
        constraints_from({"entity": False})
    with pytest.raises(ConfigError, match="tagger"):
        Constraints(tagger="flair")
    with pytest.raises(ConfigError, match="2 originals"):
        check(["a", "b"], ["a"], Constraints())
    cfg = Constraints(numbers=False, tagger="rules")
    assert word_options(["Profits rose by five"], cfg)[0][3] is not None  # numbers may change
    assert word_options(["Profits rose by five"], Constraints(tagger="rules"))[0][3] is None
    assert mark_edits("a b c d", "a x c") == "a [-b-] {+x+} c [-d-]"
    out = check(["same"], ["same"], cfg)
    assert math.isnan(out["constraints_pass"][0]) and out["edits"] == [None]


@pytest.mark.filterwarnings("ignore:The multilingual functions")
def test_tagged_senses_match_nltk_lemma_counts(tmp_path: Path) -> None:
    """Reference: NLTK's WordNetCorpusReader on the same files; a sense is tagged when the
    lemma's SemCor count (cntlist.rev) is positive."""
    nltk_wn = pytest.importorskip("nltk.corpus.reader.wordnet")
    import nltk

    for p in ("noun", "verb", "adj", "adv"):
        for f in (f"index.{p}", f"data.{p}", f"{p}.exc"):
            shutil.copy(f"/usr/share/wordnet/{f}", tmp_path / f)
    shutil.copy("/usr/share/wordnet/cntlist.rev", tmp_path / "cntlist.rev")
    (tmp_path / "lexnames").write_text("".join(f"{i:02d}\tx{i}\t0\n" for i in range(45)))
    nltk.data.path.append(str(tmp_path))

    class Reader(nltk_wn.WordNetCorpusReader):  # type: ignore[misc]
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    wn = Reader(str(tmp_path), None)
    for word, pos in [("fall", "v"), ("open", "a"), ("general", "a"), ("market", "n")]:
        ref: list[str] = []
        for s in wn.synsets(word, "s" if pos == "a" else pos) + (
            wn.synsets(word, "a") if pos == "a" else []
        ):
            lem = next(x for x in s.lemmas() if x.name().lower() == word)
            if lem.count() > 0:
                ref += [x.name().lower() for x in s.lemmas() if x.name().isalpha()]
        got = synonyms(word, pos, 10_000, False, "tagged")
        assert set(got) - {word} == set(ref) - {word}, word


def _bbc(n: int, words: int = 30) -> Any:
    return datasets.create("bbc-news", {"split": "test", "limit": n, "max_words": words})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synonym", "embedding_swap"])
def test_constrained_perturbations_keep_entities_numbers_and_similarity(name: str) -> None:
    from robustlab.attacks.text.common import similarity

    x = list(_bbc(10).x)

    def rng() -> ExampleRNG:
        return ExampleRNG.from_seed(3, torch.arange(len(x)))

    p = perturbations.create(name)
    out = p(x, 0.5, rng())
    assert out == p(x, 0.5, rng())  # deterministic
    changed = [i for i in range(len(x)) if out[i] != x[i]]
    assert len(changed) >= 5
    ann = annotate([x[i] for i in changed])
    for k, i in enumerate(changed):
        a, b = x[i].split(), out[i].split()
        assert len(a) == len(b)
        for j in range(len(a)):
            if ann[k].entity[j] or ann[k].number[j]:
                assert a[j] == b[j], (a[j], b[j])
    sims = similarity([x[i] for i in changed], [out[i] for i in changed])
    assert bool((sims >= 0.8 - 1e-9).all())
    rec = p.record(x, out)
    assert [i for i, v in enumerate(rec["constraints_pass"]) if not math.isnan(v)] == changed
    assert sum(rec["constraints_pass"][i] for i in changed) / len(changed) >= 0.8
    # unconstrained: the old edits break constraints far more often
    free = perturbations.create(name, {"constraints": False})(x, 0.5, rng())
    res = check(x, free, Constraints())["constraints_pass"]
    assert sum(v for v in res if not math.isnan(v)) / len(changed) < 0.5


@pytest.mark.slow
def test_bbc_run_records_and_report_section(tmp_path: Path) -> None:
    from robustlab.report.sections.text_constraints import TextConstraintsSection, highlight
    from robustlab.runner import Suite, run_suite
    from robustlab.store import Store

    suite = Suite.parse(
        {
            "name": "constraints-bbc",
            "models": [{"name": "tfidf-logreg"}],
            "data": {"name": "bbc-news", "params": {"split": "test", "limit": 8, "max_words": 25}},
            "probes": [
                {"kind": "attack", "name": "textfooler", "levels": [0.2],
                 "params": {"max_queries": 100}},
                {"kind": "perturbation", "name": "synonym", "levels": [0.5]},
            ],
        },
        "constraints-bbc",
    )  # fmt: skip
    st = Store(str(tmp_path / "s.db"))
    run = run_suite(suite, st, progress=False)
    df = st.records(run)
    assert df["error"].isna().all()
    on = df[df["probe"].isin(["textfooler", "synonym"])]
    changed = on["x.edits"].notna()
    assert changed.sum() >= 5 and (on["x.constraints_pass"].notna() == changed).all()
    # an attack's recorded verdicts never name entities or numbers: they are never edited
    v = on["x.constraint_violations"].dropna()
    assert not v.str.contains("entity|number").any()
    sec = TextConstraintsSection()
    data = sec.build(df, st.run_info(run))
    assert data is not None
    rows = {r["probe"]: r for r in data["rows"]}
    assert set(rows) == {"textfooler", "synonym"}
    for probe, r in rows.items():
        sub = on[(on["probe"] == probe) & changed]
        assert r["changed"] == len(sub)
        assert r["pass"] == pytest.approx(sub["x.constraints_pass"].astype(float).mean())
    passes = [s["violations"] == "" for s in data["sample"]]
    assert passes == sorted(passes)  # failing examples first
    html = sec.render(data)
    assert "<del>" in html and "<ins>" in html
    assert highlight("a [-<b>-] {+c+}") == "a <del>&lt;b&gt;</del> <ins>c</ins>"
