"""Word-level text attacks (textfooler, genetic, random-substitution) on real BBC News classifiers.

Classifiers: TF-IDF + logistic regression on the BBC train split, and logistic regression on
all-MiniLM-L6-v2 sentence embeddings (the same cached encoder as the similarity constraint).
Test texts: the first 30 words of BBC test articles. References: an exhaustive single-substitution
search (exact optimum when one edit is allowed), NLTK's WordNet reader (synonym table) and the
attack-independent word edit rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.attacks.text import word_edit_rate
from robustlab.attacks.text.common import Words, embed, similarity
from robustlab.attacks.text.lexicon import stop_words, synonyms, wordnet
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, metrics
from robustlab.core.rng import ExampleRNG
from robustlab.models import CallableClassifier

ATTACKS = ("textfooler", "genetic", "random-substitution")
ALL = (*ATTACKS, "beam")  # beam shares textfooler's constraint code (checked below)
FAST = {"genetic": {"pop_size": 8, "generations": 4}, "beam": {"beam_width": 2}}
BUDGET = 0.2


def _rng(ids: torch.Tensor, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, ids)


@pytest.fixture(scope="module")
def bbc() -> tuple[Any, Any]:
    train = datasets.create("bbc-news", {"split": "train"})
    test = datasets.create("bbc-news", {"split": "test", "limit": 24, "max_words": 30})
    return train, test


@pytest.fixture(scope="module")
def tfidf(bbc: tuple[Any, Any]) -> CallableClassifier:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = bbc[0]
    pipe = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), LogisticRegression(C=10))
    pipe.fit(train.x, train.y.numpy())
    return CallableClassifier(lambda t: pipe.predict_proba(list(t)), 5, output="probs")


@pytest.fixture(scope="module")
def minilm(bbc: tuple[Any, Any]) -> CallableClassifier:
    from sklearn.linear_model import LogisticRegression

    train = datasets.create("bbc-news", {"split": "train", "limit": 150, "max_words": 30})
    lr = LogisticRegression(C=10, max_iter=2000).fit(embed(train.x).numpy(), train.y.numpy())
    return CallableClassifier(lambda t: lr.predict_proba(embed(list(t)).numpy()), 5, output="probs")


def _run(name: str, model: Any, x: list[str], y: torch.Tensor, **kw: Any) -> Any:
    atk = attacks.create(name, {**FAST.get(name, {}), **kw})
    return atk(model, x, y, BUDGET, rng=_rng(torch.arange(len(x))))


def _rate(res: Any, model: Any, x: list[str], y: torch.Tensor) -> float:
    clean_ok = model.logits(x).argmax(1) == y
    return float(res.success[clean_ok].float().mean())


def test_search_beats_random_substitution_tfidf(tfidf: Any, bbc: tuple[Any, Any]) -> None:
    # the similarity constraint is off here (it costs MiniLM encodes; tested below)
    x, y = bbc[1].x, bbc[1].y
    rates = {n: _rate(_run(n, tfidf, x, y, min_similarity=0.0), tfidf, x, y) for n in ATTACKS}
    assert rates["textfooler"] > rates["random-substitution"], rates
    assert rates["genetic"] > rates["random-substitution"], rates
    # with the issue-18 meaning constraints (default) textfooler fools 0.18 of these texts (2 of
    # 11); the unconstrained candidates of the docs' table gave more
    assert rates["textfooler"] >= 0.15, rates


def _minilm_rates(model: Any, names: tuple[str, ...], params: dict[str, Any]) -> dict[str, float]:
    texts = datasets.create("bbc-news", {"split": "test", "limit": 12, "max_words": 20})
    x, y = texts.x, texts.y
    rates = {}
    for n in names:
        atk = attacks.create(n, params.get(n, {}))
        rates[n] = _rate(atk(model, x, y, 0.25, rng=_rng(torch.arange(len(x)))), model, x, y)
    return rates


def test_search_beats_random_substitution_minilm(minilm: Any) -> None:
    # MiniLM queries and the similarity constraint share one cached encoder; a query budget keeps
    # the encodes to a few hundred (the genetic attack needs more: slow test below)
    params = {"textfooler": {"max_candidates": 10, "max_queries": 50}}
    rates = _minilm_rates(minilm, ("textfooler", "random-substitution"), params)
    assert rates["textfooler"] > rates["random-substitution"], rates


@pytest.mark.slow
def test_genetic_beats_random_substitution_minilm(minilm: Any) -> None:
    # unconstrained candidates (pre issue 18): under the meaning constraints neither attack fools
    # any of these 12 texts, which cannot tell the searches apart
    off = {"constraints": False}
    params = {"genetic": {"pop_size": 10, "generations": 5, "max_candidates": 6, **off},
              "random-substitution": off}  # fmt: skip
    rates = _minilm_rates(minilm, ("genetic", "random-substitution"), params)
    assert rates["genetic"] > rates["random-substitution"], rates


@pytest.mark.parametrize("name", ATTACKS)
def test_constraints_hold(name: str, tfidf: Any, bbc: tuple[Any, Any]) -> None:
    x, y = bbc[1].x[:8], bbc[1].y[:8]
    res = _run(name, tfidf, x, y, max_queries=30)
    assert (word_edit_rate(x, res.x_adv) <= BUDGET + 1e-12).all()
    changed = [i for i in range(len(x)) if res.x_adv[i] != x[i]]
    assert changed, "the attack changed nothing"
    sim = similarity([x[i] for i in changed], [res.x_adv[i] for i in changed])
    assert (sim >= 0.8 - 1e-6).all(), sim.min()
    assert torch.allclose(sim, torch.tensor([res.extra["similarity"][i] for i in changed]).double())
    assert (
        res.queries.dtype == torch.int64 and (res.queries <= 30).all() and (res.queries >= 1).all()
    )
    assert torch.equal(res.success, tfidf.logits(res.x_adv).argmax(1) != y)
    for i in changed:  # substitutions only, never of stop words; whitespace kept
        a, b = Words(x[i]), Words(res.x_adv[i])
        assert a.seps == b.seps and len(a) == len(b)
        assert all(w.lower().strip(".,'\"") not in stop_words()
                   for w, v in zip(a.words, b.words, strict=True) if w != v)  # fmt: skip
        assert res.extra["words_changed"][i] == sum(
            p != q for p, q in zip(a.words, b.words, strict=True)
        )


@pytest.mark.parametrize("name", ALL)
def test_deterministic_and_batch_order_invariant(
    name: str, tfidf: Any, bbc: tuple[Any, Any]
) -> None:
    x, y = bbc[1].x, bbc[1].y
    ids = torch.arange(100, 100 + len(x))
    atk = attacks.create(name, {**FAST.get(name, {}), "min_similarity": 0.0})
    res = atk(tfidf, x, y, BUDGET, rng=_rng(ids))
    again = atk(tfidf, x, y, BUDGET, rng=_rng(ids))
    assert again.x_adv == res.x_adv and torch.equal(again.queries, res.queries)
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:13]
    sub = atk(tfidf, [x[i] for i in p], y[p], BUDGET, rng=_rng(ids[p]))
    assert sub.x_adv == [res.x_adv[i] for i in p]
    assert torch.equal(sub.success, res.success[p]) and torch.equal(sub.queries, res.queries[p])
    if name in ("genetic", "random-substitution"):  # another seed draws other random choices
        other = atk(tfidf, x, y, BUDGET, rng=_rng(ids, seed=1))
        assert other.x_adv != res.x_adv


def test_greedy_within_exhaustive_single_edit(tfidf: Any, bbc: tuple[Any, Any]) -> None:
    # with one edit allowed (budget 1/30), an exhaustive search over every word x candidate is the
    # exact optimum: no attack may fool an example it cannot, and greedy finds the best candidate
    # at each word it tries
    x, y = bbc[1].x, bbc[1].y
    budget = 1 / 30
    exact = []
    for t, yi in zip(x, y.tolist(), strict=True):
        w = Words(t)
        rows = [w.join(w.words[:j] + [c] + w.words[j + 1 :])
                for j, cs in enumerate(w.candidates("dominant", 30)) for c in cs]  # fmt: skip
        exact.append(bool(rows) and bool((tfidf.logits(rows).argmax(1) != yi).any()))
    clean_wrong = tfidf.logits(x).argmax(1) != y
    exact_t = torch.tensor(exact) | clean_wrong
    for name in ALL:
        atk = attacks.create(name, {**FAST.get(name, {}), "min_similarity": 0.0})
        res = atk(tfidf, x, y, budget, rng=_rng(torch.arange(len(x))))
        assert not (res.success & ~exact_t).any(), name
        assert (word_edit_rate(x, res.x_adv) <= budget + 1e-12).all()
    tf = attacks.create("textfooler", {"min_similarity": 0.0})(
        tfidf, x, y, budget, rng=_rng(torch.arange(len(x)))
    )
    assert tf.success.sum() >= 0.5 * exact_t.sum()


def test_query_budget_and_bad_input(tfidf: Any, bbc: tuple[Any, Any]) -> None:
    x, y = bbc[1].x[:6], bbc[1].y[:6]
    for name in ALL:
        res = _run(name, tfidf, x, y, max_queries=5, min_similarity=0.0)
        assert (res.queries <= 5).all(), name
    atk = attacks.create("textfooler")
    with pytest.raises(ConfigError, match="list of strings"):
        atk(tfidf, torch.zeros(2, 3), y[:2], 0.1, rng=_rng(torch.arange(2)))
    with pytest.raises(ConfigError, match="one label per text"):
        atk(tfidf, x, y[:2], 0.1, rng=_rng(torch.arange(6)))
    with pytest.raises(ConfigError, match="edit rate"):
        atk(tfidf, x, y, 1.5, rng=_rng(torch.arange(6)))
    with pytest.raises(ConfigError, match="pos must be"):
        attacks.create("textfooler", {"pos": "noun"})(tfidf, x, y, 0.1, rng=_rng(torch.arange(6)))
    with pytest.raises(ConfigError, match="max_queries"):
        attacks.create("genetic", {"max_queries": 0})(tfidf, x, y, 0.1, rng=_rng(torch.arange(6)))
    # empty and punctuation-only texts are left alone (one query each)
    res = atk(tfidf, ["", "!!! ..."], torch.tensor([0, 1]), 0.5, rng=_rng(torch.arange(2)))
    assert res.x_adv == ["", "!!! ..."] and res.queries.tolist() == [1, 1]


@pytest.mark.filterwarnings("ignore:The multilingual functions")
def test_wordnet_table_matches_nltk(tmp_path: Any) -> None:
    nltk_wn = pytest.importorskip("nltk.corpus.reader.wordnet")
    import shutil

    for p in ("noun", "verb", "adj", "adv"):
        for f in (f"index.{p}", f"data.{p}", f"{p}.exc"):
            shutil.copy(f"/usr/share/wordnet/{f}", tmp_path / f)
    nouns = "Tops act animal artifact attribute body cognition communication event feeling food "
    nouns += "group location motive object person phenomenon plant possession process quantity "
    nouns += "relation shape state substance time"
    verbs = "body change cognition communication competition consumption contact creation "
    verbs += "emotion motion perception possession social stative weather"
    lex = ["adj.all", "adj.pert", "adv.all"] + [f"noun.{k}" for k in nouns.split()]
    lex += [f"verb.{k}" for k in verbs.split()] + ["adj.ppl"]  # WordNet 3.0 lexnames (45)
    (tmp_path / "lexnames").write_text("".join(f"{i:02d}\t{n}\t0\n" for i, n in enumerate(lex)))
    import nltk

    nltk.data.path.append(str(tmp_path))  # nltk 3.10 reads only from authorised folders

    class Reader(nltk_wn.WordNetCorpusReader):  # type: ignore[misc]
        def map_wn(self, version: str = "wordnet") -> None:
            return None  # no Open Multilingual Wordnet mapping (English only, offline)

    wn = Reader(str(tmp_path), None)
    syn, _ = wordnet()
    for word, pos in [
        ("profit", "n"),
        ("rise", "v"),
        ("quick", "a"),
        ("quickly", "r"),
        ("market", "n"),
        ("bank", "n"),
        ("run", "v"),
    ]:
        ref: list[str] = []
        for s in wn.synsets(word, pos):
            for lemma in s.lemma_names():
                lemma = lemma.lower()
                if lemma.isalpha() and lemma != word and lemma not in ref:
                    ref.append(lemma)
        assert list(syn[(word, pos)]) == ref, word
    assert synonyms("profits")[:3] and "the" not in synonyms("the") and synonyms("the") == ()


def test_text_metrics_on_attack_records(tfidf: Any, bbc: tuple[Any, Any]) -> None:
    x, y = bbc[1].x[:8], bbc[1].y[:8]
    # as above: cached similarities; unconstrained candidates (pre issue 18), since under the
    # meaning constraints no example of these 8 is fooled within 30 queries and the metrics
    # of successes would be undefined
    res = _run("textfooler", tfidf, x, y, max_queries=30, constraints=False)
    clean = (tfidf.logits(x).argmax(1) == y).float()
    df = pd.DataFrame({"x.success": res.success.float(), "x.queries": res.queries.float(),
                       "x.clean_correct": clean, "x.edit_rate": word_edit_rate(x, res.x_adv),
                       "x.similarity": res.extra["similarity"], "correct": 1 - res.success.float()})  # fmt: skip
    ok = (clean == 1) & res.success
    wins = float(ok.sum())
    q = metrics.get("queries_per_success")(df)
    assert q == pytest.approx(float(res.queries[clean == 1].sum()) / wins)
    assert metrics.get("queries_successful")(df) == pytest.approx(
        float(res.queries[ok].double().mean())
    )
    er = metrics.get("edit_rate_successful")(df)
    assert 0 < er <= BUDGET
    sim = metrics.get("similarity_successful")(df)
    assert 0.8 <= sim <= 1
    assert np.isnan(metrics.get("similarity_successful")(df.iloc[:0]))


def test_lexicon_inflection_acronyms_and_sources() -> None:
    from robustlab.attacks.text.sources import candidates

    assert all(c.endswith("s") for c in synonyms("rates", "any"))  # plural kept
    assert "paces" in synonyms("rates") and "pace" not in synonyms("rates", "any")
    assert synonyms("us") == () and "usa" in synonyms("US")  # pronoun vs acronym
    assert "win" in synonyms("won", "any", 30, False)  # NLTK-style: the lemma itself
    try:
        import lemminflect  # noqa: F401

        assert "slid" in synonyms("slipped")  # irregular, inflected by lemminflect
    except ModuleNotFoundError:
        assert synonyms("slipped") == ()  # irregular forms need lemminflect
    assert all(c.isalpha() and c != "market" for c in candidates("market", "both"))
    emb = candidates("company", "embedding")
    assert emb and set(emb) <= set(candidates("company", "both"))
    with pytest.raises(ConfigError, match="candidates must be"):
        candidates("company", "glove")


def test_through_the_classification_task(bbc: tuple[Any, Any]) -> None:
    from robustlab.core.registry import models, tasks
    from robustlab.data.base import Dataset

    model = models.create("tfidf-logreg")
    test = bbc[1]
    data = Dataset(x=test.x[:10], y=test.y[:10], name="bbc-10")
    # unconstrained (pre issue 18): under the meaning constraints none of these 10 is fooled; the
    # constrained path through the runner is tests/test_text_constraints.py
    atk = attacks.create("textfooler", {"min_similarity": 0.0, "constraints": False})
    ev, extra = tasks.create("classification").attack(
        atk, model, data, BUDGET, "edit", _rng(torch.arange(10))
    )
    assert {
        "success",
        "queries",
        "edit_rate",
        "clean_correct",
        "similarity",
        "words_changed",
    } <= set(extra)
    assert max(extra["edit_rate"]) <= BUDGET
    fooled = [
        s == 1 and c == 1 for s, c in zip(extra["success"], extra["clean_correct"], strict=True)
    ]
    assert any(fooled)
    assert all(ev.correct[i] == 0 for i, f in enumerate(fooled) if f)


def test_beam_width_one_is_textfooler(tfidf: Any, bbc: tuple[Any, Any]) -> None:
    x, y = bbc[1].x, bbc[1].y
    kw = {"min_similarity": 0.0, "max_queries": 80}
    tf = attacks.create("textfooler", kw)(tfidf, x, y, BUDGET, rng=_rng(torch.arange(len(x))))
    b1 = attacks.create("beam", {**kw, "beam_width": 1})(
        tfidf, x, y, BUDGET, rng=_rng(torch.arange(len(x)))
    )
    assert b1.x_adv == tf.x_adv and torch.equal(b1.queries, tf.queries)
    assert torch.equal(b1.success, tf.success)
    b3 = attacks.create("beam", {**kw, "beam_width": 3})(
        tfidf, x, y, BUDGET, rng=_rng(torch.arange(len(x)))
    )
    assert (word_edit_rate(x, b3.x_adv) <= BUDGET + 1e-12).all() and (b3.queries <= 80).all()
    assert torch.equal(b3.success, tfidf.logits(b3.x_adv).argmax(1) != y)
