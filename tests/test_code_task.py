"""The code-generation task end to end: oracle / empty / failing generators, runner, metrics, report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.code.problems import adapt_solution, load_humaneval, load_jsonl
from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets, models, perturbations, report_sections, tasks
from robustlab.core.rng import ExampleRNG
from robustlab.metrics.code import recode_table
from robustlab.models import CallableGenerator
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
from robustlab.store import Store

N = 8


def _oracle(prompts: list[str], **kw: Any) -> list[str]:
    """Canonical solutions, found by the last function the prompt defines (a real, perfect model)."""
    sols = {p["entry_point"]: p["canonical_solution"] for p in load_humaneval()}
    return [sols.get(re.findall(r"def (\w+)\(", p)[-1], "    pass\n") for p in prompts]


@models.register("test-code-oracle")
def _oracle_model() -> CallableGenerator:
    return CallableGenerator(_oracle, version="oracle-v1")


@pytest.fixture(scope="module")
def data() -> Any:
    return datasets.create("humaneval", {"limit": N})


def test_oracle_passes_and_renamed_entry_point_is_mapped(data: Any) -> None:
    task = tasks.create("code-generation", {"timeout": 10.0})
    ev = task.evaluate(CallableGenerator(_oracle), data.x, data.y)
    assert ev.correct.tolist() == [1.0] * N and ev.extra["status"] == ["passed"] * N
    t = perturbations.create("func_random_name")
    px = task.perturb(t, data.x, 1, ExampleRNG.from_seed(0, data.ids))
    assert all(a["entry_point"] != b["entry_point"] for a, b in zip(px, data.x, strict=True))
    sols = {
        p["prompt"]: adapt_solution(p, y["canonical_solution"])
        for p, y in zip(px, data.y, strict=True)
    }
    ev = task.evaluate(CallableGenerator(lambda ps, **kw: [sols[p] for p in ps]), px, data.y)
    assert ev.correct.tolist() == [1.0] * N and set(ev.extra["family"]) == {"function"}


def test_empty_and_failing_generators_give_clear_records(data: Any) -> None:
    task = tasks.create("code-generation")
    ev = task.evaluate(CallableGenerator(lambda ps, **kw: [""] * len(ps)), data.x, data.y)
    assert ev.correct.tolist() == [0.0] * N
    assert ev.extra["status"] == ["empty completion"] * N

    def flaky(ps: list[str], **kw: Any) -> list[str]:
        if any("truncate_number" in p for p in ps):
            raise RuntimeError("model crashed")
        return _oracle(ps)

    ev = task.evaluate(CallableGenerator(flaky), data.x, data.y)
    bad = [i for i, p in enumerate(data.x) if p["entry_point"] == "truncate_number"]
    assert [i for i, e in enumerate(ev.error) if e] == bad and "model crashed" in ev.error[bad[0]]
    assert torch.isnan(ev.correct[bad[0]]) and ev.correct.nansum() == N - 1


def test_runner_records_and_report_section(tmp_path: Path) -> None:
    suite = Suite(
        name="code-oracle",
        models=[ModelSpec(name="test-code-oracle")],
        task=ComponentSpec(name="code-generation", params={"timeout": 10.0}),
        data=ComponentSpec(name="humaneval", params={"limit": N}),
        probes=[
            ProbeSpec(kind="perturbation", name="doc_synonym_substitution", levels=[1, 2]),
            ProbeSpec(kind="perturbation", name="format_newline_insertion", levels=[1, 2]),
        ],
        metrics=["pass_at_1"],
    )
    store = Store(str(tmp_path / "s.db"))
    run = run_suite(suite, store, progress=False)
    df = store.records(run)
    assert len(df) == N * 5
    t = recode_table(df).set_index("name")
    assert set(t.index) >= {
        "doc_synonym_substitution",
        "format_newline_insertion",
        "docstring",
        "format",
    }
    assert (t["pass@k"] == 1.0).all() and (t["robust_pass@k"] == 1.0).all()
    sec = report_sections.get("code")()
    html = sec.render(sec.build(df, store.run_info(run)))
    assert "<svg" in html and "Robust Pass" in html
    from robustlab.report.build import write_report

    page, _ = write_report(store, run, tmp_path / "reports")
    text = page.read_text()
    assert "Code generation robustness (ReCode)" in text and "doc_synonym_substitution" in text


def test_loaders_and_bad_input(tmp_path: Path) -> None:
    mbpp = tmp_path / "mbpp.jsonl"
    mbpp.write_text(
        '{"task_id": 2, "text": "Write a function to find the shared elements.", '
        '"code": "def similar_elements(a, b):\\r\\n  res = tuple(set(a) & set(b))\\r\\n  return (res) ", '
        '"test_list": ["assert set(similar_elements((3, 4, 5), (5, 7, 4))) == set((4, 5))"]}\n'
    )
    (p,) = load_jsonl(mbpp)
    assert p["entry_point"] == "similar_elements" and "candidate(" in p["test"]
    from robustlab.code.problems import check_program
    from robustlab.code.sandbox import run_program

    assert run_program(check_program(p, p["canonical_solution"])).passed
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x", "prompt": "def f():\\n"}\n')
    with pytest.raises(ConfigError, match="lacks entry_point, test"):
        load_jsonl(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_jsonl(tmp_path / "missing.jsonl")
    task = tasks.create("code-generation")
    with pytest.raises(ConfigError, match="problem dicts"):
        task.check(CallableGenerator(_oracle), datasets.create("digits"))


def test_instruct_style_runs_the_replied_function(data: Any) -> None:
    """A chat model answers with the whole function in a code block: it redefines the stub."""
    full = {
        p["prompt"]: p["prompt"] + y["canonical_solution"]
        for p, y in zip(data.x, data.y, strict=True)
    }

    def chat(ps: list[str], **kw: Any) -> list[str]:
        assert kw["stop"] == []
        out = []
        for p in ps:
            prompt = p.split("```python\n", 1)[1].rsplit("```", 1)[0]
            out.append(f"Sure! Here it is:\n```python\n{full[prompt]}```\nHope it helps.")
        return out

    task = tasks.create("code-generation", {"style": "instruct", "timeout": 10.0})
    ev = task.evaluate(CallableGenerator(chat), data.x, data.y)
    assert ev.correct.tolist() == [1.0] * N
    with pytest.raises(ConfigError, match="style"):
        tasks.create("code-generation", {"style": "poem"}).evaluate(
            CallableGenerator(chat), data.x, data.y
        )


def _three_samples(prompts: list[str], **kw: Any) -> list[str]:
    """n = 3 samples per prompt (consecutive in the batch): sample 0 always right, sample 1 right
    on nominal prompts only, sample 2 always wrong -- a real execution of each in the sandbox."""
    nominal = {p["prompt"] for p in load_humaneval()}
    right = _oracle(prompts)
    return [
        right[i] if i % 3 == 0 or (i % 3 == 1 and p in nominal) else "    return None\n"
        for i, p in enumerate(prompts)
    ]


@models.register("test-code-three-samples")
def _three_samples_model() -> CallableGenerator:
    return CallableGenerator(_three_samples, version="three-v1")


def test_sampled_runs_store_per_sample_outcomes_for_robust_pass(tmp_path: Path) -> None:
    """n = 3 through runner and store: nominal 110, both variants 100 (every prompt changed) ->
    pass@1 2/3, Robust Pass@1 1/3 (was all-or-nothing: 0), Robust Relative 1/3 (sample 1 flips)."""
    suite = Suite(
        name="code-three",
        models=[ModelSpec(name="test-code-three-samples")],
        task=ComponentSpec(name="code-generation", params={"timeout": 10.0, "n": 3}),
        data=ComponentSpec(name="humaneval", params={"limit": 4}),
        probes=[ProbeSpec(kind="perturbation", name="format_newline_insertion", levels=[1, 2])],
    )
    store = Store(str(tmp_path / "s.db"))
    df = store.records(run_suite(suite, store, progress=False))
    masks = df.groupby("kind")["x.pass_mask"].agg(set).to_dict()
    assert masks == {"clean": {"110"}, "perturbation": {"100"}}
    t = recode_table(df, k=1).set_index("name").loc["format_newline_insertion"]
    assert t["pass@k"] == pytest.approx(2 / 3) and t["robust_pass@k"] == pytest.approx(1 / 3)
    assert t["robust_drop@k"] == pytest.approx(0.5)
    assert t["robust_relative@k"] == pytest.approx(1 / 3)
    assert t["robust_relative_released@k"] == pytest.approx(1 / 3)
