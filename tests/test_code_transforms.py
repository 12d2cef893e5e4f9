"""Code transformations: semantics preserved on ALL 164 HumanEval problems, contract, change rates."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustlab.code.problems import adapt_solution, check_program, load_humaneval
from robustlab.code.sandbox import Limits, Sandbox
from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.testing import check_perturbation

CODE = [n for n in perturbations.names() if getattr(perturbations.get(n), "modality", "") == "code"]


@pytest.fixture(scope="module")
def problems() -> dict[bool, list[dict[str, Any]]]:
    return {False: load_humaneval(), True: load_humaneval(partial=True)}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with Sandbox() as sb:
        yield sb


def test_at_least_30_in_four_families() -> None:
    fams = {perturbations.get(n).family for n in CODE}
    assert len(CODE) >= 30 and fams == {"docstring", "function", "syntax", "format"}


@pytest.mark.parametrize("name", CODE)
def test_contract(name: str, problems: dict[bool, list[dict[str, Any]]]) -> None:
    check_perturbation(perturbations.create(name), problems[True][:12], severities=[1, 2])


def _check_preserved(
    name: str, problems: dict[bool, list[dict[str, Any]]], sb: Sandbox, every: int
) -> None:
    t = perturbations.create(name)
    for partial in (False, True):
        ps = problems[partial]
        out = t(ps, 1, ExampleRNG.from_seed(0, torch.arange(len(ps))))
        applied = [
            i for i, o in enumerate(out) if o["prompt"] != ps[i]["prompt"] and i % every == 0
        ]
        progs = [
            check_program(
                {**ps[i], "prompt": out[i]["prompt"]},
                adapt_solution(out[i], ps[i]["canonical_solution"]),
                out[i]["entry_point"],
            )
            for i in applied
        ]
        res = sb.run(progs, Limits(timeout=10))
        bad = [
            (ps[i]["task_id"], r.message) for i, r in zip(applied, res, strict=True) if not r.passed
        ]
        assert not bad, f"{name} (partial={partial}) broke {len(bad)} problems: {bad[:3]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", CODE)
def test_canonical_solution_passes_on_all_164(
    name: str, problems: dict[bool, list[dict[str, Any]]], sandbox: Sandbox
) -> None:
    """Every transformation, on nominal and partial prompts, keeps all 164 problems solvable."""
    _check_preserved(name, problems, sandbox, every=1)


@pytest.mark.parametrize("name", CODE)
def test_canonical_solution_passes_every_4th(
    name: str, problems: dict[bool, list[dict[str, Any]]], sandbox: Sandbox
) -> None:
    """Fast variant of the above on problems 0, 4, 8, ... (41 of 164)."""
    _check_preserved(name, problems, sandbox, every=4)


def test_bad_input_and_skips(problems: dict[bool, list[dict[str, Any]]]) -> None:
    rng = ExampleRNG.from_seed(0, torch.arange(1))
    with pytest.raises(ConfigError, match="problem dicts"):
        perturbations.create("code_for_while")(["def f(): pass"], 1, rng)
    broken = {"prompt": "def f(:\n", "entry_point": "f"}
    out = perturbations.create("code_for_while")([broken], 1, rng)[0]
    assert out["prompt"] == broken["prompt"] and "does not parse" in out["skipped"]
    out = perturbations.create("code_dead_code")([problems[False][0]], 1, rng)[0]
    assert "no partial code" in out["skipped"]
