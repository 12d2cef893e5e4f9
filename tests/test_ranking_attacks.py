"""Text perturbations (contract, edit rate, WordNet) and ranking attacks on BM25: budgets respected,
success re-checked by the task, queries counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, models, perturbations, tasks
from robustlab.core.rng import ExampleRNG
from robustlab.testing import check_perturbation

TEXT = ["Ad sales boost Time Warner profit", "Dollar gains on Greenspan speech",
        "Yukos unit buyer faces loan claim", "High fuel prices hit BA's profits", "x"]  # fmt: skip


@pytest.fixture(scope="module")
def bbc():
    return datasets.create("bbc-known-item", {"split": "test", "n_queries": 40})


@pytest.mark.parametrize("name", ["typo", "synonym", "word_order", "word_deletion"])
def test_text_perturbation_contract(name):
    p = perturbations.create(name)
    check_perturbation(p, TEXT * 3, severities=p.severities)
    with pytest.raises(ConfigError, match="edit rate"):
        p(TEXT, 2.0, ExampleRNG.from_seed(0, torch.arange(len(TEXT))))
    with pytest.raises(ConfigError, match="list of strings"):
        p(torch.zeros(2, 3), 0.1, ExampleRNG.from_seed(0, torch.arange(2)))


def test_edit_rate_and_wordnet():
    words = ["market"] * 2000
    out = perturbations.create("typo")(
        [" ".join(words)], 0.3, ExampleRNG.from_seed(1, torch.arange(1))
    )
    changed = np.mean([a != b for a, b in zip(words, out[0].split(), strict=True)])
    assert changed == pytest.approx(0.3, abs=0.04)  # severity = share of words edited
    from robustlab.perturbations.text.wordnet import synonyms_table

    syn = synonyms_table()
    assert "automobile" in syn["car"] and "buy" in syn["purchase"]


def test_query_attack_respects_budget(bbc):
    task, bm25 = tasks.create("ranking"), models.create("bm25")
    rng = ExampleRNG.from_seed(0, bbc.ids)
    asr = []
    for budget in (1, 3):
        ev, ex = task.attack(attacks.create("query-attack"), bm25, bbc, budget, "inf", rng)
        assert max(ex["edits"]) <= budget
        rank = np.array(ev.extra["rank"], dtype=float)
        ok = np.array(ex["clean_correct"]) == 1
        success = np.array(ex["success"])
        # success re-checked on the returned queries: the relevant doc left the top 10
        assert ((np.nan_to_num(rank, nan=101) > 10) == (success == 1))[ok].all()
        assert (np.array(ex["queries"])[ok] >= 1).all() and (np.array(ex["queries"]) >= 0).all()
        asr.append(success[ok].mean())
    assert asr[1] >= asr[0] and asr[1] > 0.5


def test_query_attack_edits_at_most_budget_words(bbc):
    a, bm25 = attacks.create("query-attack"), models.create("bm25")
    res = a(bm25, bbc.x[:10], bbc.y[:10], 2, k=10, rng=ExampleRNG.from_seed(0, bbc.ids[:10]))
    for e, adv, n in zip(bbc.x[:10], res.x_adv, res.extra["edits"], strict=True):
        before, after = e["query"].split(), adv["query"].split()
        assert n <= 2 and len(before) - len(after) <= n
        assert sum(w not in before for w in after) <= n and adv["docs"] is e["docs"]


def test_black_box_document_attack_on_bm25(bbc):
    task, bm25 = tasks.create("ranking"), models.create("bm25")
    data = bbc.take(range(15))
    ev, ex = task.attack(attacks.create("doc-attack", {"target_rank": 30}), bm25, data, 2, "inf",
                         ExampleRNG.from_seed(0, data.ids))  # fmt: skip
    for ins in ex["inserted"]:
        assert len(ins.split()) <= 2
    assert np.mean(ex["success"]) > 0.5 and np.mean(ex["rank_change"]) > 5
    assert (np.array(ex["clean_rank"]) >= 30).all()
    # only the target document changed, by an insertion at its start
    res = attacks.create("doc-attack", {"target_rank": 30})(
        bm25, data.x[:3], data.y[:3], 2, k=10, rng=ExampleRNG.from_seed(0, data.ids[:3])
    )
    for e, adv, t in zip(data.x[:3], res.x_adv, res.extra["target"], strict=True):
        diff = [i for i, (a, b) in enumerate(zip(e["docs"], adv["docs"], strict=True)) if a != b]
        assert diff == [t] and adv["docs"][t].endswith(e["docs"][t])
