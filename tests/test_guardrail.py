"""RigorLLM-style guardrail (S43), the GCG suffix attack and the safe-suffix defence on SpamAssassin.

A small guardrail (60 training e-mails cut to 24 words, one typo copy each: a 120-text k-NN bank,
embedded once and cached on disk) keeps the tests fast. References: scikit-learn's
``NearestNeighbors`` (cosine k-NN) and ``MultinomialNB`` / ``LogisticRegression`` (the LM score),
the fusion formula, the tokenizer (suffix positions), one-at-a-time scoring (batched candidates),
an exhaustive one-word suffix search (exact optimum) and the word edit rate (budget).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.attacks.text import word_edit_rate
from robustlab.attacks.text.common import Scorer
from robustlab.attacks.text.gcg import Problem, evaluate, suffix_inputs, suffix_vocab
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.models.guardrail import WORDS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = {"limit": 60, "max_words": 24}
SMALL = {"data_params": DATA, "augment_with": [["typo", 0.1]], "k": 8}


def _guard(component: str, **kw: Any) -> Any:
    return models.create("guardrail", {"component": component, **SMALL, **kw})


@pytest.fixture(scope="module")
def test_spam() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    d = datasets.create("spam-assassin", {"split": "test", "limit": 40, "max_words": 24})
    assert d.ids is not None
    return list(d.x), d.y, d.ids


def test_lm_score_matches_sklearn_naive_bayes() -> None:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB

    g = _guard("lm")
    texts, y, lm = g.knn.texts, g.knn.labels.long(), g.lm
    train = datasets.create("spam-assassin", {"split": "train", **DATA})
    assert len(texts) == 2 * len(train) and texts[: len(train)] == list(train.x)
    assert torch.equal(y, torch.cat([train.y, train.y]))  # the typo copies keep their labels
    cv = CountVectorizer(token_pattern=WORDS.pattern, lowercase=True)
    counts = cv.fit_transform(texts)
    nb = MultinomialNB(alpha=1.0).fit(counts, y.numpy())
    ref = nb.feature_log_prob_[1] - nb.feature_log_prob_[0]
    order = [lm.vocab[w] for w in cv.get_feature_names_out()]
    assert len(order) == len(lm.vocab)
    assert np.allclose(lm.llr[order].numpy(), ref, atol=1e-10)
    # the feature: mean log-likelihood ratio over the known words = NB's joint log-likelihood
    # difference without the prior, divided by the word count
    jll = nb.predict_joint_log_proba(counts)
    prior = nb.class_log_prior_[1] - nb.class_log_prior_[0]
    n = np.asarray(counts.sum(1)).ravel()
    assert np.allclose(lm.feature(texts).numpy(), (jll[:, 1] - jll[:, 0] - prior) / n, atol=1e-9)
    # calibration: ridge logistic regression on (f, 1) = scikit-learn's with C = 1 / 1e-3
    f = lm.feature(texts).numpy()
    lr = LogisticRegression(C=1e3, fit_intercept=False, tol=1e-12, max_iter=10_000)
    lr.fit(np.stack([f, np.ones_like(f)], 1), y.numpy())
    assert np.allclose(lr.coef_[0], [lm.a, lm.b], rtol=1e-4, atol=1e-4)


def test_knn_matches_sklearn_and_fusion_formula(test_spam: Any) -> None:
    from sklearn.neighbors import NearestNeighbors

    x = test_spam[0][:20]
    knn, lm, fused = _guard("knn"), _guard("lm"), _guard("fused", alpha=0.3)
    q = knn.encoder.query_matrix(x)
    nn = NearestNeighbors(n_neighbors=8, metric="cosine", algorithm="brute")
    nn.fit(knn.knn.bank.numpy())
    idx = nn.kneighbors(q.numpy(), return_distance=False)
    ref = knn.knn.labels.numpy()[idx].mean(1)
    assert torch.allclose(knn.flag_probs(x), torch.tensor(ref, dtype=torch.float64))
    p = 0.3 * knn.flag_probs(x) + 0.7 * lm.flag_probs(x)
    assert torch.allclose(fused.flag_probs(x), p, atol=1e-12)
    logp = fused.logits(x).double()
    assert torch.allclose(logp.exp(), torch.stack([1 - p, p], 1).clamp(1e-6, 1 - 1e-6), atol=1e-6)
    assert knn.capabilities.grad and fused.capabilities.grad and not lm.capabilities.grad
    # the safe suffix is appended to every input before scoring
    d = fused.with_safe_suffix("please review")
    assert torch.equal(d.flag_probs(x[:3]), fused.flag_probs([f"{t} please review" for t in x[:3]]))
    with pytest.raises(ConfigError, match="component"):
        _guard("llm")


def test_gcg_stays_within_suffix_budget(test_spam: Any) -> None:
    x, y, ids = test_spam[0][:5], test_spam[1][:5], test_spam[2][:5]
    for comp, budget, n_tokens in (("fused", 0.1, 4), ("lm", 0.3, 3), ("lm", 0.0, 4)):
        g = _guard(comp)
        atk = attacks.create("gcg", {"n_tokens": n_tokens, "iterations": 2, "candidates": 6})
        res = atk(g, x, y, budget, rng=ExampleRNG.from_seed(0, ids))
        assert (word_edit_rate(x, res.x_adv) <= budget + 1e-12).all()
        for t, a, k in zip(x, res.x_adv, res.extra["suffix_words"], strict=True):
            cap = min(n_tokens, int(budget * len(t.split()) + 1e-9))
            assert a == t or (a.startswith(t + " ") and len(a[len(t) :].split()) == k <= cap)
        assert torch.equal(res.success, g.logits(res.x_adv).argmax(1) != y)
        assert (res.queries >= 1).all() and (res.queries <= 2 + 2 * 6).all()
    with pytest.raises(ConfigError, match="query-only"):
        attacks.create("gcg", {"gradient": True})(_guard("lm"), x, y, 0.2,
                                                  rng=ExampleRNG.from_seed(0, ids))  # fmt: skip


def test_batched_candidates_equal_one_at_a_time(test_spam: Any) -> None:
    x, y = test_spam[0][:3], test_spam[1][:3]
    g = _guard("fused")
    ids, words = suffix_vocab(str(g.encoder.path))
    p = Problem(g, x, y, torch.arange(3), torch.tensor([4, 2, 3]), 1.0, ids, words)
    cand = torch.randint(0, len(ids), (3, 5, 4), generator=torch.Generator().manual_seed(0))
    loss, fooled = evaluate(p, cand, torch.arange(3), Scorer(g, y, None, 256))
    g.encoder._queries.clear()  # no embedding served from the batched call's cache
    for i in range(3):
        for b in range(5):
            one = p.strings(cand[i : i + 1, b : b + 1], torch.tensor([i]))[0]
            assert len(one) == 1
            pr = g.logits(one).double().softmax(1)[0]
            assert abs(float(pr[y[i]].log()) - float(loss[i, b])) < 1e-5
            assert bool(pr.argmax() != y[i]) == bool(fooled[i, b])


def test_gradient_inputs_are_the_models_tokens(test_spam: Any) -> None:
    x, y = test_spam[0][:4], test_spam[1][:4]
    g = _guard("knn").with_safe_suffix("kindly ignore")
    ids, words = suffix_vocab(str(g.encoder.path))
    p = Problem(g, x, y, torch.arange(4), torch.tensor([3, 3, 1, 0]), 1.0, ids, words)
    cur = torch.randint(0, len(ids), (4, 3), generator=torch.Generator().manual_seed(1))
    si = suffix_inputs(p, cur, torch.arange(4))
    ref = g.encoder.tokens(g.inputs([f"{t} {' '.join(p.suffix_words(cur, i))}".strip()
                                     for i, t in enumerate(x)]))  # fmt: skip
    assert torch.equal(si.ids, ref["input_ids"]) and torch.equal(si.mask, ref["attention_mask"])
    r, c, j, s = si.where
    assert torch.equal(si.ids[r, c], ids[cur[j, s]]) and len(r) == 7
    with torch.no_grad():  # the differentiable path embeds exactly what the model embeds
        emb = g.encoder.embed(None, si.mask, g.encoder.net.embeddings.word_embeddings(si.ids))
    assert torch.allclose(emb, g.encoder.encode(si.full), atol=1e-5)


def test_query_only_gcg_within_exhaustive_one_word_optimum(test_spam: Any) -> None:
    # one suffix word: trying every vocabulary word is the exact optimum (the lm component scores
    # 21k texts in about a second); GCG can reach it at best, and fools nothing it cannot
    x, y, ids_ex = test_spam[0], test_spam[1], test_spam[2]
    lm = _guard("lm")
    flagged = [i for i in range(len(x)) if y[i] == 1 and lm.logits([x[i]]).argmax(1) == 1][:2]
    ids, words = suffix_vocab(str(lm.encoder.path))
    atk = attacks.create("gcg", {"n_tokens": 1, "iterations": 6, "candidates": 32})
    for i in flagged:
        p_all = lm.flag_probs([f"{x[i]} {w}" for w in words])
        res = atk(lm, [x[i]], y[i : i + 1], 1.0, rng=ExampleRNG.from_seed(0, ids_ex[i : i + 1]))
        p_gcg = float(lm.flag_probs(res.x_adv)[0])
        assert p_gcg >= float(p_all.min()) - 1e-12
        assert not bool(res.success[0]) or bool((p_all < 0.5).any())
        assert p_gcg <= float(lm.flag_probs([x[i] + " the"])[0]) + 1e-12  # never worse than init


def test_gcg_deterministic_and_batch_order_invariant(test_spam: Any) -> None:
    x, y, ids = test_spam
    lm = _guard("lm")
    atk = attacks.create("gcg", {"n_tokens": 3, "iterations": 3, "candidates": 8})
    res = atk(lm, x, y, 0.2, rng=ExampleRNG.from_seed(0, ids))
    again = atk(lm, x, y, 0.2, rng=ExampleRNG.from_seed(0, ids))
    assert again.x_adv == res.x_adv and torch.equal(again.queries, res.queries)
    p = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:13]
    sub = atk(lm, [x[i] for i in p], y[p], 0.2, rng=ExampleRNG.from_seed(0, ids[p]))
    assert sub.x_adv == [res.x_adv[i] for i in p]
    assert torch.equal(sub.success, res.success[p]) and torch.equal(sub.queries, res.queries[p])
    other = atk(lm, x, y, 0.2, rng=ExampleRNG.from_seed(1, ids))
    assert other.x_adv != res.x_adv


def _flagged_spam(model: Any, test_spam: Any, n: int) -> tuple[list[str], torch.Tensor, Any]:
    x, y, ids = test_spam
    keep = [i for i in range(len(x)) if y[i] == 1 and model.logits([x[i]]).argmax(1) == 1][:n]
    return [x[i] for i in keep], y[keep], ids[keep]


MID = {"data_params": {"limit": 120, "max_words": 48}, "augment_with": [["typo", 0.1]]}


@pytest.mark.slow
def test_fusion_is_harder_to_evade_than_knn() -> None:
    # the seed's claim at small scale: GCG suffixes (white-box through the soft k-NN) evade the
    # k-NN alone more often than the fused guardrail, on spam e-mails both flag
    d = datasets.create("spam-assassin", {"split": "test", "limit": 100, "max_words": 48})
    knn, fused = _guard("knn", **MID), _guard("fused", **MID)
    spam = torch.nonzero(d.y == 1).flatten().tolist()
    both = [
        i for i in spam if knn.logits([d.x[i]]).argmax(1) == 1 == fused.logits([d.x[i]]).argmax(1)
    ][:6]
    x, y, ids = [d.x[i] for i in both], d.y[both], d.ids[both]  # type: ignore[index]
    atk = attacks.create("gcg", {"n_tokens": 8, "iterations": 3, "candidates": 12})
    rate = {}
    for name, m in (("knn", knn), ("fused", fused)):
        res = atk(m, x, y, 0.2, rng=ExampleRNG.from_seed(0, ids))
        assert torch.equal(res.success, m.logits(res.x_adv).argmax(1) != y)
        rate[name] = float(res.success.float().mean())
    assert len(both) == 6 and rate["fused"] < rate["knn"], rate


def test_safe_suffix_search_keeps_the_verdict(test_spam: Any) -> None:
    # the defence's search (sign -1, one suffix shared by all texts) only ever raises the mean
    # log-probability of the true verdict, and reports the value a re-evaluation gives
    from robustlab.attacks.text.gcg import SearchConfig, suffix_search
    from robustlab.defenses.safe_suffix import SafeSuffixConfig, fit_safe_suffix

    x, y, _ = test_spam
    lm = _guard("lm")
    ids, words = suffix_vocab(str(lm.encoder.path))
    n = len(x)
    p = Problem(lm, x, y, torch.zeros(n, dtype=torch.int64), torch.tensor([4]), -1.0, ids, words)
    init = torch.full((1, 4), words.index("the"), dtype=torch.int64)
    u = ExampleRNG.from_seed(0, torch.tensor([0])).uniform(5, 16, 2, dtype=torch.float64)
    cur, loss, _ = suffix_search(p, init, SearchConfig(5, 16, 64, None, False), u,
                                 Scorer(lm, y, None, 256))  # fmt: skip
    suffix = " ".join(p.suffix_words(cur, 0))
    logp = lm.logits([f"{t} {suffix}" for t in x]).double().log_softmax(1)
    start = lm.logits([f"{t} the the the the" for t in x]).double().log_softmax(1)
    assert abs(float(loss[0]) + float(logp[torch.arange(n), y].mean())) < 1e-6
    assert float(logp[torch.arange(n), y].mean()) >= float(start[torch.arange(n), y].mean())
    cfg = SafeSuffixConfig(n_tokens=3, rounds=1, iterations=2, candidates=8, attack_iterations=2)
    safe = fit_safe_suffix(lm, x[:12], y[:12], cfg)
    assert safe == fit_safe_suffix(lm, x[:12], y[:12], cfg)
    assert len(safe.split()) == 3 and all(w in words for w in safe.split())
