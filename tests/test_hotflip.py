"""The ``hotflip`` attack (Ebrahimi et al., 2018) on a tiny BERT classifier trained briefly on BBC
News (300 texts of 30 words, 12 epochs: about 60% test accuracy, cached under the robustlab
cache). References: the model's ``transformers`` forward pass (predictions on the adversarial
texts, exact losses of candidate swaps), the text-path ``token_gradients`` (candidates), a direct
random token-substitution baseline with the same swap budget, a suite run end to end."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from robustlab.attacks.text.hotflip import allowed_tokens, splice
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, models
from robustlab.core.rng import ExampleRNG
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers")

import test_hf_models as hfm  # noqa: E402 - after the skip

VERSION = "hotflip-bert-v1"


def _train(folder: Path) -> None:
    from robustlab.data.text import bbc_news

    tr = bbc_news(split="train", limit=300, max_words=30)
    tok = hfm._tokenizer(list(tr.x), True)
    torch.manual_seed(0)
    net = transformers.BertForSequenceClassification(hfm._bert())
    opt = torch.optim.AdamW(net.parameters(), lr=5e-3)
    enc = tok(list(tr.x), truncation=True, max_length=hfm.MAXLEN, padding=True,
              return_tensors="pt")  # fmt: skip
    net.train()
    for _ in range(12):
        perm = torch.randperm(len(tr.y))
        for s in range(0, len(perm), 32):
            b = perm[s : s + 32]
            out = net(input_ids=enc["input_ids"][b], attention_mask=enc["attention_mask"][b],
                      labels=tr.y[b])  # fmt: skip
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")  # concurrent sessions: own folder
    net.eval().save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:  # another session finished first
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def bert() -> dict[str, Any]:
    """The trained model's folder, robustlab adapter, reference net/tokenizer and 40 test texts."""
    from robustlab.core.paths import cache_dir
    from robustlab.data.text import bbc_news

    folder = cache_dir() / "test-models" / VERSION
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _train(folder)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    te = bbc_news(split="test", limit=40, max_words=30)
    clf = models.create("hf-classifier", {"path": str(folder)})
    return {"path": folder, "clf": clf, "net": net, "tok": tok, "x": list(te.x), "y": te.y}


def _ref_pred(b: dict[str, Any], texts: list[str]) -> torch.Tensor:
    enc = b["tok"](texts, truncation=True, max_length=hfm.MAXLEN, padding=True,
                   return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        return b["net"](**enc).logits.argmax(1)


def _rng(n: int) -> ExampleRNG:
    return ExampleRNG.from_seed(0, torch.arange(n))


@pytest.fixture(scope="module")
def run10(bert: dict[str, Any]) -> Any:
    atk = attacks.create("hotflip", {"topk": 16, "beam_width": 2})
    return atk(bert["clf"], bert["x"], bert["y"], 0.1, rng=_rng(len(bert["x"])))


def test_budget_and_recorded_predictions(bert: dict[str, Any], run10: Any) -> None:
    x, y, res = bert["x"], bert["y"], run10
    clean = _ref_pred(bert, x)
    assert (clean == y).float().mean() >= 0.45  # the model learned something
    ref = _ref_pred(bert, res.x_adv)  # predictions of transformers' own forward pass
    assert res.success.tolist() == (ref != y).tolist()
    assert res.extra["prediction"] == ref.tolist()
    for i, t in enumerate(x):
        cap = math.floor(0.1 * len(t.split()) + 1e-9)
        assert len(res.extra["swaps"][i]) <= cap
        assert res.extra["words_changed"][i] <= len(res.extra["swaps"][i])
        if clean[i] != y[i]:  # misclassified already: nothing to do
            assert res.extra["swaps"][i] == [] and res.x_adv[i] == t
        if res.extra["retokenized_same"][i]:
            assert res.extra["id_success"][i] == bool(res.success[i])
    fooled = (clean == y) & res.success
    assert fooled.sum() >= 0.5 * (clean == y).sum()  # a real attack on the clean-correct texts
    one = attacks.create("hotflip", {"topk": 16, "max_swaps": 1})(
        bert["clf"], x, y, 0.1, rng=_rng(len(x))
    )
    assert max(len(s) for s in one.extra["swaps"]) == 1
    capped = attacks.create("hotflip", {"topk": 16, "max_queries": 40})(
        bert["clf"], x, y, 0.1, rng=_rng(len(x))
    )
    assert int(capped.queries.max()) <= 40 < int(res.queries.max())
    assert max(len(s) for s in capped.extra["swaps"]) == 2  # 1 + 16 + 16 + 1 of 40


def test_chosen_swap_is_the_best_topk_candidate_by_exact_loss(bert: dict[str, Any]) -> None:
    """One swap, beam 1: the candidates are the top-k HotFlip gains of the text (text path,
    allowed tokens, no special positions); the attack's swap has the largest exact loss among them,
    by brute force through transformers' forward pass (or none beats the clean loss and the text
    stays)."""
    clf, net, k = bert["clf"], bert["net"], 8
    x, y = bert["x"][:12], bert["y"][:12]
    res = attacks.create("hotflip", {"topk": k, "max_swaps": 1})(clf, x, y, 0.1, rng=_rng(12))
    g = clf.token_gradients(x, y)
    ok, _ = allowed_tokens(clf.tokenizer)
    gain = g.gain.masked_fill(~ok[: g.gain.shape[2]][None, None], -math.inf)
    checked = 0
    for i in range(len(x)):
        if _ref_pred(bert, [x[i]])[0] != y[i]:
            continue
        val, flat = gain[i].flatten().topk(k)
        pos, tok = flat // gain.shape[2], flat % gain.shape[2]
        cand = g.input_ids[i].repeat(k, 1)
        cand[torch.arange(k), pos] = tok
        with torch.no_grad():
            out = net(input_ids=cand, attention_mask=g.attention_mask[i].repeat(k, 1)).logits
            clean = net(input_ids=g.input_ids[i : i + 1],
                        attention_mask=g.attention_mask[i : i + 1]).logits  # fmt: skip
        loss = F.cross_entropy(out, y[i].repeat(k), reduction="none")
        l0 = float(F.cross_entropy(clean, y[i : i + 1]))
        sw = res.extra["swaps"][i]
        if float(loss.max()) <= l0 + 1e-6:
            assert sw == []
            continue
        best = int(loss.argmax())
        assert sw == [(int(pos[best]), int(g.input_ids[i, pos[best]]), int(tok[best]))]
        checked += 1
    assert checked >= 3


def test_at_least_as_strong_as_random_token_swaps(bert: dict[str, Any], run10: Any) -> None:
    """A direct random baseline in the same threat model: per clean-correct text, 3 tries of
    ``floor(0.1 * words)`` random non-special positions each set to a random allowed token."""
    clf, x, y = bert["clf"], bert["x"], bert["y"]
    tok = clf.tokenizer
    ok, strings = allowed_tokens(tok)
    pool = torch.nonzero(ok).flatten()
    enc = tok(x, truncation=True, max_length=hfm.MAXLEN, return_offsets_mapping=True)
    correct = _ref_pred(bert, x) == y
    gen = torch.Generator().manual_seed(0)
    rows, owner = [], []
    for i in torch.nonzero(correct).flatten().tolist():
        off = enc["offset_mapping"][i]
        where = [p for p, (s, e) in enumerate(off) if e > s]
        cap = min(math.floor(0.1 * len(x[i].split()) + 1e-9), len(where))
        for _ in range(3):
            pick = torch.randperm(len(where), generator=gen)[:cap].tolist()
            new = pool[torch.randint(len(pool), (cap,), generator=gen)].tolist()
            sw = [(where[p], 0, v) for p, v in zip(pick, new, strict=True)]
            rows.append(splice(x[i], [tuple(o) for o in off], sw, strings))
            owner.append(i)
    own = torch.tensor(owner)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    fooled[own[_ref_pred(bert, rows) != y[own]]] = True
    rand_rate = float(fooled[correct].float().mean())
    hot_rate = float(run10.success[correct].float().mean())
    assert hot_rate >= rand_rate and hot_rate > 0


def test_models_without_token_gradients_are_refused(bert: dict[str, Any], tmp_path: Path) -> None:
    """A black-box text classifier (TF-IDF + logistic regression): the attack refuses it, and a
    suite with a hotflip probe on it is refused before anything runs (``needs_grad``)."""
    atk = attacks.create("hotflip", {})
    with pytest.raises(ConfigError, match="token gradients"):
        atk(models.create("tfidf-logreg"), ["a text"], torch.tensor([0]), 0.1, rng=_rng(1))
    with pytest.raises(ConfigError, match="edit rate"):
        atk(bert["clf"], ["a text"], torch.tensor([0]), 1.5, rng=_rng(1))
    suite = Suite.parse({
        "name": "hotflip-bb", "seed": 0, "models": [{"name": "tfidf-logreg"}],
        "data": {"name": "bbc-news", "params": {"split": "test", "limit": 4}},
        "probes": [{"kind": "attack", "name": "hotflip", "levels": [0.1]}],
    }, "hotflip-bb")  # fmt: skip
    with pytest.raises(ConfigError, match="needs input gradients"):
        run_suite(suite, Store(str(tmp_path / "bb.db")), progress=False)


def test_suite_runs_hotflip_end_to_end(bert: dict[str, Any], tmp_path: Path) -> None:
    suite = Suite.parse({
        "name": "hotflip-bbc", "seed": 0,
        "models": [{"name": "hf-classifier", "params": {"path": str(bert["path"])}}],
        "data": {"name": "bbc-news", "params": {"split": "test", "limit": 8, "max_words": 30}},
        "probes": [{"kind": "attack", "name": "hotflip", "levels": [0.1],
                    "params": {"topk": 8}}],
    }, "hotflip-bbc")  # fmt: skip
    st = Store(str(tmp_path / "s.db"))
    df = st.records(run_suite(suite, st, progress=False))
    assert len(df) == 16 and df["error"].isna().all()
    atk = df[df["kind"] == "attack"].sort_values("example_id")
    assert (atk["x.edit_rate"] <= 0.1 + 1e-9).all()
    assert (atk["x.prediction"].astype(int).astype(str) == atk["pred"]).all()
    clean = df[df["probe"] == "clean"].sort_values("example_id")
    assert (atk["x.success"].astype(bool) <= (atk["pred"].values != atk["label"].values)).all()
    assert (clean["pred"].values != clean["label"].values).sum() <= (
        atk["pred"].values != atk["label"].values
    ).sum()


@pytest.mark.slow  # the tagger (spaCy) load dominates
def test_constraints_keep_entities_and_numbers(bert: dict[str, Any]) -> None:
    """``constraints: true``: words the tagger marks as entities or numbers are never changed, the
    constraint check is recorded, and the recorded prediction is still the model's on the final
    (repaired) text."""
    from robustlab.perturbations.text.constraints import annotate

    x, y = bert["x"][:12], bert["y"][:12]
    res = attacks.create("hotflip", {"constraints": True})(bert["clf"], x, y, 0.1, rng=_rng(12))
    assert {"constraints_pass", "constraint_violations", "repaired"} <= set(res.extra)
    assert res.extra["prediction"] == _ref_pred(bert, res.x_adv).tolist()
    changed = 0
    for t, a, ann in zip(x, res.x_adv, annotate(x), strict=True):
        wo, wa = t.split(), a.split()
        assert len(wo) == len(wa)
        for j, (p, q) in enumerate(zip(wo, wa, strict=True)):
            if p != q:
                changed += 1
                assert not ann.entity[j] and not ann.number[j], (p, q)
    assert changed > 0
