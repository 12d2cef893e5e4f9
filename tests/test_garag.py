"""GARAG: NSGA-II sorting against its definition, and the attack on the BBC QA RAG pipeline."""

from __future__ import annotations

import copy

import pytest
import torch

from robustlab.attacks.garag import GARAG, crowding_distance, non_dominated_ranks
from robustlab.attacks.text import word_edit_rate
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets, models, perturbations, tasks
from robustlab.core.rng import ExampleRNG
from robustlab.data.base import Dataset

BUDGET = 0.1


def _dominates(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a <= b).all() and (a < b).any())


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_ranks_match_the_definition(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    f = torch.randint(0, 6, (40, 2), generator=g).double()  # ties and duplicates included
    r = non_dominated_ranks(f)
    for j in range(len(f)):
        # not dominated by any point of its own or a later front ...
        assert not any(_dominates(f[i], f[j]) for i in range(len(f)) if r[i] >= r[j])
        # ... and (fronts after the first) dominated by some point of the previous front
        if r[j] > 0:
            assert any(_dominates(f[i], f[j]) for i in range(len(f)) if r[i] == r[j] - 1)


def test_crowding_distance_by_hand() -> None:
    f = torch.tensor([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(f)
    assert torch.isinf(d[0]) and torch.isinf(d[3])
    assert d[1].item() == pytest.approx(2 / 4 + 3 / 4) and d[2].item() == pytest.approx(
        3 / 4 + 2 / 4
    )


@pytest.fixture(scope="module")
def setup() -> tuple[object, Dataset]:
    rag = models.create("rag", {"retriever": "bm25", "reader": "cloze-reader", "k": 2})
    return rag, datasets.create("bbc-qa", {"n": 12})


def _rng(data: Dataset, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, data.ids)


def test_garag_lowers_containment_more_than_random_typos(setup: tuple[object, Dataset]) -> None:
    rag, data = setup
    task = tasks.create("rag")
    clean = task.evaluate(rag, data.x, data.y).correct.mean().item()
    garag = GARAG(population=6, generations=3)
    x0 = copy.deepcopy(data.x)
    res = garag(rag, data.x, data.y, BUDGET, rng=_rng(data))
    assert data.x == x0  # no input mutation
    adv = task.evaluate(rag, res.x_adv, data.y).correct.mean().item()
    # the same edit rate as random keyboard typos over the gold passage
    typo = task.perturb(perturbations.create("typo"), data.x, BUDGET, _rng(data))
    rand = task.evaluate(rag, typo, data.y).correct.mean().item()
    assert clean >= 0.9 and adv <= clean - 0.25 and adv < rand
    # success = clean-correct and now wrong; checked again on the returned examples
    again = task.evaluate(rag, res.x_adv, data.y).correct
    assert bool((res.success <= (again == 0)).all())
    rates = word_edit_rate([e["context"] for e in data.x], [e["context"] for e in res.x_adv])
    assert bool((rates <= BUDGET + 1e-9).all())
    assert bool((res.queries >= 1).all() and (res.queries <= 1 + 6 * 4).all())
    assert [e["question"] for e in res.x_adv] == [e["question"] for e in data.x]


def test_garag_is_deterministic_and_batch_order_invariant(setup: tuple[object, Dataset]) -> None:
    rag, data = setup
    garag = attacks.create("garag", {"population": 4, "generations": 1})
    a = garag(rag, data.x, data.y, BUDGET, rng=_rng(data))
    b = garag(rag, data.x, data.y, BUDGET, rng=_rng(data))
    assert a.x_adv == b.x_adv and torch.equal(a.queries, b.queries)
    perm = torch.tensor([5, 2, 11, 0, 7])
    sub = data.take(perm)
    c = garag(rag, sub.x, sub.y, BUDGET, rng=_rng(data).take(perm))
    assert c.x_adv == [a.x_adv[i] for i in perm.tolist()]
    assert torch.equal(c.queries, a.queries[perm]) and torch.equal(c.success, a.success[perm])


def test_garag_keep_mode_and_query_budget(setup: tuple[object, Dataset]) -> None:
    rag, data = setup
    keep = GARAG(population=4, generations=2, retrieval="keep")
    res = keep(rag, data.x, data.y, BUDGET, rng=_rng(data))
    top = res.extra["adv_gold_in_topk"]
    assert all(top[i] == 1 for i in range(len(data)) if res.success[i])
    capped = GARAG(population=4, generations=1, max_queries=3)(
        rag, data.x, data.y, BUDGET, rng=_rng(data)
    )
    assert int(capped.queries.max()) <= 3
    # a zero budget edits nothing and succeeds nowhere
    none = GARAG()(rag, data.x, data.y, 0.0, rng=_rng(data))
    assert not bool(none.success.any()) and none.x_adv == data.x


def test_garag_bad_input(setup: tuple[object, Dataset]) -> None:
    rag, data = setup
    with pytest.raises(ConfigError, match="budget"):
        GARAG()(rag, data.x, data.y, 1.5, rng=_rng(data))
    with pytest.raises(ConfigError, match="population"):
        GARAG(population=1)(rag, data.x, data.y, 0.1, rng=_rng(data))
    with pytest.raises(ConfigError, match="retrieval"):
        GARAG(retrieval="up")(rag, data.x, data.y, 0.1, rng=_rng(data))
    with pytest.raises(ConfigError, match="RAG pipeline"):
        GARAG()(models.create("bm25"), data.x, data.y, 0.1, rng=_rng(data))


@pytest.mark.slow
def test_garag_against_the_smollm2_reader() -> None:
    rag = models.create("rag", {"retriever": "bm25", "reader": "smollm2-135m", "k": 1})
    data = datasets.create("bbc-qa", {"n": 12})  # ~150 CPU generations (cached for reruns)
    task = tasks.create("rag")
    clean = task.evaluate(rag, data.x, data.y).correct
    res = GARAG(population=4, generations=2)(rag, data.x, data.y, 0.1, rng=_rng(data))
    adv = task.evaluate(rag, res.x_adv, data.y).correct
    assert float(clean.sum()) >= 2 and float(adv.sum()) < float(clean.sum())
