"""FailSafeQA perturbations, judges and scores (Robustness, Context Grounding, Compliance)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from robustlab.core.registry import datasets, metrics, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.data.base import Dataset
from robustlab.metrics.failsafe import (
    LLMJudge,
    RuleJudge,
    compliance,
    contains,
    failsafe_scores,
)
from robustlab.perturbations.text.chars import misspellings_table
from robustlab.perturbations.text.failsafe import irrelevant_pool
from robustlab.testing import check_perturbation

NAMES = ["query_misspelled", "query_incomplete", "query_out_of_domain",
         "context_ocr", "context_irrelevant", "context_missing"]  # fmt: skip


@pytest.fixture(scope="module")
def data() -> Dataset:
    return datasets.create("bbc-qa", {"n": 20})


def _field(data: Dataset, name: str) -> list[str]:
    return [e[perturbations.create(name).field] for e in data.x]


@pytest.mark.parametrize("name", NAMES)
def test_contract_on_qa_fields(name: str, data: Dataset) -> None:
    p = perturbations.create(name)
    check_perturbation(p, _field(data, name), ids=data.ids)


def test_query_failures(data: Dataset) -> None:
    q = _field(data, "query_misspelled")
    rng = ExampleRNG.from_seed(0, data.ids)
    mis = perturbations.create("query_misspelled")(q, 0.5, rng)
    table = misspellings_table()
    known = changed = 0
    for a, b in zip(q, mis, strict=True):
        assert "___" in b and len(a.split()) == len(b.split())
        for wa, wb in zip(a.split(), b.split(), strict=True):
            changed += wa != wb
            known += wb.lower().strip(",.'") in table.get(wa.lower().strip(",.'"), ())
    assert changed > 0.3 * sum(len(t.split()) for t in q) and known > 0  # real misspellings used
    inc = perturbations.create("query_incomplete")(q, 0.3, ExampleRNG.from_seed(0, data.ids))
    for a, b in zip(q, inc, strict=True):
        assert "___" in b and len(b.split()) == len(a.split()) - round(0.3 * len(a.split()))
    ood = perturbations.create("query_out_of_domain")(["Quarter profits and sales rose ___."], 1.0,
                                                      ExampleRNG.from_seed(0, torch.arange(1)))  # fmt: skip
    assert "money made" in ood[0] and "stuff sold" in ood[0] and "___" in ood[0]


def test_context_failures(data: Dataset) -> None:
    c = _field(data, "context_ocr")
    rng = ExampleRNG.from_seed(0, data.ids)
    ocr = perturbations.create("context_ocr")(c, 0.3, rng)
    assert sum(a != b for a, b in zip(c, ocr, strict=True)) == len(c)
    irr = perturbations.create("context_irrelevant")(c, 1.0, ExampleRNG.from_seed(0, data.ids))
    assert all(a != b and b for a, b in zip(c, irr, strict=True)) and len(irrelevant_pool()) > 1000
    gold = [e["question"].replace("___", y) for e, y in zip(data.x, data.y, strict=True)]
    assert not any(g in b for g, b in zip(gold, irr, strict=True))  # the answer is gone
    half = perturbations.create("context_missing")(c, 0.5, ExampleRNG.from_seed(0, data.ids))
    assert 0 < sum(b == "" for b in half) < len(c)
    assert all(b in ("", a) for a, b in zip(c, half, strict=True))


def test_rule_judge_by_hand() -> None:
    j = RuleJudge()
    q = ["Sales rose ___ in May."] * 6
    refs = ["2%", "2%", "2%", "56,000", "2%", "2%"]
    answers = ["It rose 2%.", "unknown", "3%", "56000 jobs", "The passages do not say.", "2%"]
    ok = [True, True, True, True, False, False]
    assert j.rate(q, refs, answers, ok) == [6, 2, 1, 6, 6, 3]
    assert not contains("12%", "2%") and contains("$2bn", "2bn")


def test_scores_by_hand() -> None:
    rows = []
    # example 1: correct everywhere, refuses both context failures; example 2: fails one query
    # perturbation and fabricates once
    grid = {1: {"clean": 6, "query_misspelled": 6, "context_missing": 6, "context_irrelevant": 6},
            2: {"clean": 6, "query_misspelled": 1, "context_missing": 6, "context_irrelevant": 1}}  # fmt: skip
    for ex, probes in grid.items():
        for probe, rating in probes.items():
            kind = "clean" if probe == "clean" else "perturbation"
            rows.append({"model": "m", "kind": kind, "probe": probe, "level": 1.0, "example_id": ex,
                         "x.rating": rating, "x.answerable": int(probe in ("clean", "query_misspelled")),
                         "x.refused": int(rating == 6 and probe.startswith("context"))})  # fmt: skip
    rows.append({**rows[0], "kind": "attack", "probe": "garag", "x.rating": 1})  # ignored
    fs = failsafe_scores(pd.DataFrame(rows)).iloc[0]
    assert fs["robustness"] == 0.5 and fs["context_grounding"] == 0.5
    assert fs["compliance"] == pytest.approx(compliance(0.5, 0.5)) == pytest.approx(0.5)
    assert compliance(1.0, 0.5, beta=1) == pytest.approx(2 / 3)  # beta = 1: harmonic mean
    assert compliance(0.9, 0.3, beta=0.5) == pytest.approx(1.25 * 0.27 / (0.25 * 0.9 + 0.3))
    df = pd.DataFrame(rows[:-1])
    grp = df[df.probe == "query_misspelled"]
    assert metrics.get("answer_compliance")(grp) == 0.5
    assert metrics.get("context_grounding")(df[df.probe == "context_irrelevant"]) == 0.5


def test_llm_judge_with_the_local_llm() -> None:
    judge = LLMJudge(models.create("smollm2-135m"))
    r = judge.rate(["Sales rose ___ in May."] * 2, ["2%", "2%"], ["2%", "I cannot tell."],
                   [True, False])  # fmt: skip
    assert all(1 <= v <= 6 for v in r) and judge.fallbacks <= 2
