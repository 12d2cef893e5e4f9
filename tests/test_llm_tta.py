"""LLM-TTA defence (S29): aggregation against a hand computation, entropy selection, adapter
invariants, spelling normalisation, the accuracy gained on perturbed BBC text, and real LLM rewrites."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.defenses.llm_tta import TTAClassifier, spellfix


@pytest.fixture(scope="module")
def clf() -> Any:
    return models.create("tfidf-logreg")


@pytest.fixture(scope="module")
def bbc() -> Any:
    return datasets.create("bbc-news", {"split": "test", "max_words": 20})


def lower(x: list[str]) -> list[str]:
    return [t.lower() for t in x]


def first_half(x: list[str]) -> list[str]:
    return [" ".join(t.split()[: max(1, len(t.split()) // 2)]) for t in x]


def test_mean_and_vote_match_a_hand_computation(clf: Any, bbc: Any) -> None:
    x = list(bbc.x[:50])
    views = [x, lower(x), first_half(x)]
    probs = torch.stack([clf.logits(v).double().softmax(-1) for v in views])
    tta = TTAClassifier(clf, rewrites=[lower, first_half])
    assert torch.allclose(tta.logits(x).double().exp(), probs.mean(0), atol=1e-5)
    assert tta.queries == 3 * len(x) and tta.share_augmented == 1.0
    vote = TTAClassifier(clf, rewrites=[lower, first_half], aggregate="vote").logits(x)
    counts = torch.nn.functional.one_hot(probs.argmax(-1), clf.num_classes).sum(0)
    expect = (counts + 1e-3 * probs.mean(0)).argmax(1)  # majority, ties by mean probability
    assert torch.equal(vote.argmax(1), expect)


def test_entropy_selection(clf: Any, bbc: Any) -> None:
    x = list(bbc.x[:100])
    p = clf.logits(x).double().softmax(-1)
    ent = -(p * p.log()).sum(-1)
    thr = float(ent.median())
    tta = TTAClassifier(clf, rewrites=[("typo", 0.3)], entropy_threshold=thr)
    out = tta.logits(x)
    assert tta.share_augmented == pytest.approx(float((ent > thr).double().mean()))
    assert torch.equal(tta.last_augmented, ent > thr)
    assert tta.queries == len(x) + int((ent > thr).sum())
    confident = ent <= thr  # untouched: the base model's log-probabilities
    assert torch.allclose(out[confident], clf.logits([x[i] for i in confident.nonzero().flatten()]))
    never = TTAClassifier(clf, rewrites=[("typo", 0.3)], entropy_threshold=1e9)
    assert torch.allclose(never.logits(x), clf.logits(x)) and never.share_augmented == 0.0


def test_adapter_invariants(clf: Any, bbc: Any) -> None:
    x = list(bbc.x[:40])
    x0 = list(x)
    tta = TTAClassifier(clf, rewrites=[("synonym", 0.2), ("word_deletion", 0.2)])
    out = tta.logits(x)
    assert x == x0 and out.shape == (40, clf.num_classes) and torch.isfinite(out).all()
    assert torch.equal(tta.logits(x), out)  # deterministic: rewrites keyed by the text
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:17]
    assert torch.allclose(tta.logits([x[i] for i in perm]), out[perm], atol=1e-6)
    assert tta.logits([]).shape == (0, clf.num_classes)
    fp = tta.fingerprint()
    assert fp == tta.fingerprint() != TTAClassifier(clf, rewrites=[("typo", 0.2)]).fingerprint()


def test_spellfix_undoes_real_misspellings(bbc: Any) -> None:
    x = [" ".join(t.split()) for t in bbc.x[:200]]
    noisy = perturbations.create("misspelling")(x, 1.0, ExampleRNG.from_seed(0, bbc.ids[:200]))
    fixed = spellfix(noisy)
    words = [(a, b) for s, t in zip(x, fixed, strict=True)
             for a, b in zip(s.split(), t.split(), strict=True)]  # fmt: skip
    changed = sum(a != b for s, t in zip(x, noisy, strict=True)
                  for a, b in zip(s.split(), t.split(), strict=True))  # fmt: skip
    wrong = sum(a != b for a, b in words)
    assert changed > 1000 and wrong < 0.05 * changed  # >95% of the misspellings restored


def test_tta_gains_accuracy_on_perturbed_bbc(clf: Any, bbc: Any) -> None:
    x, y = list(bbc.x), bbc.y
    noisy = perturbations.create("misspelling")(x, 0.5, ExampleRNG.from_seed(0, bbc.ids))

    def acc(model: Any, xs: list[str]) -> float:
        return float((model.logits(xs).argmax(1) == y).double().mean())

    base = acc(clf, noisy)
    tta = TTAClassifier(clf, rewrites=[("spellfix", 1)], entropy_threshold=0.9)
    gained = acc(tta, noisy) - base
    assert gained > 0.01 and 0 < tta.share_augmented < 1
    assert acc(TTAClassifier(clf, rewrites=[("spellfix", 1)]), x) >= acc(clf, x) - 0.005  # clean


def test_bad_configuration_is_refused(clf: Any) -> None:
    with pytest.raises(ConfigError, match="aggregate"):
        TTAClassifier(clf, aggregate="median")
    with pytest.raises(ConfigError, match="at least one"):
        TTAClassifier(clf, rewrites=[])
    with pytest.raises(ConfigError, match="not a text perturbation"):
        TTAClassifier(clf, rewrites=[("gaussian_noise", 1)])
    with pytest.raises(ConfigError, match="rewrite is"):
        TTAClassifier(clf, rewrites=["typo"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="entropy_threshold"):
        TTAClassifier(clf, entropy_threshold=-1)
    with pytest.raises(ConfigError, match="list of strings"):
        TTAClassifier(clf, rewrites=[lower]).logits("one text")  # type: ignore[arg-type]


def test_llm_paraphrase_rewrites() -> None:
    pytest.importorskip("xllamacpp")
    clf = models.create("tfidf-logreg")
    heads = ["Ad sales boost Time Warner profit", "Dollar gains on Greenspan speech",
             "High fuel prices hit BA's profits", "Pernod takeover talk lifts Domecq"]  # fmt: skip
    tta = TTAClassifier(clf, rewrites=[("paraphrase", 1)])
    out = tta.logits(heads)
    p = torch.stack([clf.logits(heads).double().softmax(-1),
                     clf.logits(perturbations.create("paraphrase")(heads, 1, ExampleRNG.from_seed(
                         0, torch.arange(4)))).double().softmax(-1)])  # fmt: skip
    assert torch.allclose(out.double().exp(), p.mean(0), atol=1e-5)  # greedy paraphrase, cached


def _dl1(a: str, b: str) -> bool:
    """Reference: optimal-string-alignment distance of a and b is exactly 1 (full DP table)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1] == 1


def test_spellcheck_matches_brute_force_search(bbc: Any) -> None:
    from robustlab.perturbations.text.embedding import _minilm
    from robustlab.perturbations.text.normalise import spellcheck

    vocab = _minilm()[0]
    rank = {w: i for i, w in enumerate(vocab) if w.isascii() and w.isalpha() and w.islower()}
    x = [" ".join(t.lower().split()) for t in bbc.x[:40]]
    noisy = perturbations.create("char_swap")(x, 0.5, ExampleRNG.from_seed(1, bbc.ids[:40]))
    typos = sorted({w for t in noisy for w in t.split() if w.isalpha() and w not in rank})[:20]
    assert len(typos) == 20
    for w in typos:  # the most frequent vocabulary word at distance 1, by exhaustive search
        cand = [v for v in rank if abs(len(v) - len(w)) <= 1 and len(set(v) ^ set(w)) <= 2]
        near = [v for v in cand if _dl1(w, v)]  # (the filter is necessary for distance 1)
        expect = min(near, key=rank.__getitem__) if near else w
        assert spellcheck([w]) == [expect], w
    clean_words = [w for t in x for w in t.split() if w in rank]
    assert spellcheck([" ".join(clean_words)]) == [" ".join(clean_words)]  # known words kept


def test_llm_tta_runs_from_a_suite_and_records_what_it_augmented(tmp_path: Any) -> None:
    """The registered ``llm-tta`` model through the runner: records carry ``x.augmented``, and only
    uncertain inputs (entropy above the threshold) are rewritten."""
    from robustlab.runner import Suite, run_suite
    from robustlab.store import Store

    suite = Suite.parse(
        {
            "name": "tta",
            "task": {"name": "classification"},
            "data": {"name": "bbc-news", "params": {"split": "test", "max_words": 20, "limit": 40}},
            "models": [
                {"name": "tfidf-logreg"},
                {
                    "name": "llm-tta",
                    "label": "tta",
                    "params": {
                        "base": "tfidf-logreg",
                        "rewrites": [["spellcheck", 1]],
                        "entropy_threshold": 0.9,
                    },
                },
            ],  # fmt: skip
            "probes": [{"kind": "perturbation", "name": "typo", "levels": [0.3]}],
        }
    )
    st = Store(tmp_path / "s.db")
    df = st.records(run_suite(suite, st, progress=False))
    tta = df[df.model == "tta"]
    assert set(tta["x.augmented"].dropna().unique()) <= {0.0, 1.0}
    share = tta["x.augmented"].mean()
    assert 0.0 < share < 1.0  # entropy-selective: some inputs rewritten, not all
    from robustlab.metrics import summarize

    s = summarize(df, ["augmented_share"])
    got = s[(s.model == "tta") & (s.metric == "augmented_share")]["value"]
    assert got.mean() == pytest.approx(tta.groupby("probe")["x.augmented"].mean().mean())
    base = df[df.model == "tfidf-logreg"]
    assert base["x.augmented"].isna().all() if "x.augmented" in base else True
    # confident (not augmented) inputs get exactly the base model's prediction
    keep = tta[tta["x.augmented"] == 0.0].set_index(["probe", "example_id"])["pred"]
    ref = base.set_index(["probe", "example_id"])["pred"].loc[keep.index]
    assert (keep == ref).all()
