"""S4 oracle-bounded perturbations: no reported success has an oracle label change, bounded
success <= unbounded, the backoff bracket checked by the oracle itself, suite -> store -> report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.records import frame
from robustlab.core.registry import attacks, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.metrics.vision import oracle_agreement
from robustlab.report import build_report, write_report
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 120
EPS = 0.2
INNER = {"name": "pgd", "params": {"steps": 10}}


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    d = datasets.create("digits", {"split": "test"})
    return {
        "x": d.x[:N], "y": d.y[:N], "ids": d.ids[:N],
        "model": models.create("digits-mlp"), "oracle": models.create("digits-cnn"),
    }  # fmt: skip


def _run(s: dict[str, Any], mode: str | None, steps: int = 10) -> Any:
    rng = ExampleRNG.from_seed(0, s["ids"])
    if mode is None:
        return attacks.create(INNER["name"], INNER["params"])(
            s["model"], s["x"], s["y"], ThreatModel("inf", EPS), rng=rng
        )
    atk = attacks.create("oracle-bounded", {"oracle": {"name": "digits-cnn"}, "attack": INNER,
                                            "mode": mode, "backoff_steps": steps})  # fmt: skip
    return atk(s["model"], s["x"], s["y"], ThreatModel("inf", EPS), rng=rng)


@pytest.fixture(scope="module")
def results(setup: dict[str, Any]) -> dict[str, Any]:
    return {m: _run(setup, m) for m in (None, "reject", "backoff")}


def _oracle(setup: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return setup["oracle"].logits(x).argmax(1)


@pytest.mark.parametrize("mode", ["reject", "backoff"])
def test_no_success_changes_the_oracle_label(setup: dict[str, Any], results: dict[str, Any],
                                             mode: str) -> None:  # fmt: skip
    r, x, y = results[mode], setup["x"], setup["y"]
    o = _oracle(setup, r.x_adv)
    with torch.no_grad():
        fooled = setup["model"].logits(r.x_adv).argmax(1) != y
    assert bool((o[r.success] == y[r.success]).all())  # the invariant
    assert torch.equal(r.success, fooled & (o == y) & (_oracle(setup, x) == y))
    assert torch.equal(r.extra["oracle_kept"], (o == y) & (_oracle(setup, x) == y))
    assert torch.equal(r.extra["oracle_pred"], o)
    assert float((r.x_adv - x).abs().amax()) <= EPS + 1e-6
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    # the oracle changes its label on some PGD candidates at this eps: the bound is not vacuous
    assert int((_oracle(setup, results[None].x_adv) != y).sum()) > 5


def test_bounded_success_is_at_most_unbounded(results: dict[str, Any]) -> None:
    free, rej, back = (results[m].success for m in (None, "reject", "backoff"))
    assert bool((rej <= free).all())  # reject: a subset, example by example
    assert rej.sum() <= back.sum() <= free.sum()
    assert int(rej.sum()) < int(free.sum())  # measured: 0.875 vs 1.0 of 200 at eps 0.2
    # reject keeps the inner attack's candidate exactly where the oracle agrees, else x
    kept = results["reject"].extra["scale"] == 1
    assert torch.equal(results["reject"].x_adv[kept], results[None].x_adv[kept])


def test_backoff_bracket_is_checked_by_the_oracle(setup: dict[str, Any],
                                                  results: dict[str, Any]) -> None:  # fmt: skip
    # backed-off examples: the oracle keeps the label at scale s and changes it at s + 2^-steps
    # (the bisection's bracket), recomputed here on the inner attack's candidate
    r, free = results["backoff"], results[None]
    x, y = setup["x"], setup["y"]
    s = r.extra["scale"]
    back = (s < 1) & (_oracle(setup, x) == y)
    assert int(back.sum()) > 5
    delta = free.x_adv - x
    at = (x + s.float().view(-1, 1, 1, 1) * delta)[back]
    above = (x + (s.float() + 2**-10).clamp(max=1).view(-1, 1, 1, 1) * delta)[back]
    assert bool((_oracle(setup, at) == y[back]).all())
    assert bool((_oracle(setup, above) != y[back]).all())
    torch.testing.assert_close(r.x_adv[back], at.clamp(0, 1))


# end to end -----------------------------------------------------------------------------------
SUITE = """
name: oracle
models: [{name: digits-mlp}]
data: {name: digits, params: {split: test}}
shard_size: 128
probes:
  - {kind: attack, name: pgd, params: {steps: 10}, levels: [0.2]}
  - {kind: attack, name: oracle-bounded, levels: [0.2],
     params: {oracle: {name: digits-cnn}, attack: {name: pgd, params: {steps: 10}}}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("oracle")
    store = Store(root / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    html, _ = write_report(store, run_id, root / "out")
    return {"store": store, "run_id": run_id, "html": Path(html).read_text(),
            "df": frame(store.records(run_id))}  # fmt: skip


def test_suite_records_and_report(run: dict[str, Any]) -> None:
    df = run["df"]
    ob = df[df["probe"] == "oracle-bounded"].sort_values("example_id")
    free = df[df["probe"] == "pgd"].sort_values("example_id")
    assert len(ob) == len(free) == 360
    kept = pd.to_numeric(ob["x.oracle_kept"])
    succ = pd.to_numeric(ob["x.success"])
    assert ((succ == 1) <= (kept == 1)).all()  # no success without the oracle's label
    assert succ.mean() <= pd.to_numeric(free["x.success"]).mean()
    # the model was fooled exactly where a success is recorded
    assert ((succ == 1) == (ob["correct"] == 0) & (kept == 1)).all()
    same = pd.to_numeric(ob["x.oracle_pred"]) == ob["label"].astype(int)
    assert ((kept == 1) == (same & (pd.to_numeric(ob["x.oracle_clean"]) == 1))).all()
    # agreement with the oracle on the attack's own inputs, from the recorded oracle labels
    agree = oracle_agreement(ob)
    expect = (ob["pred"].astype(int) == pd.to_numeric(ob["x.oracle_pred"]).astype(int)).mean()
    assert float(agree["agreement"].iloc[0]) == pytest.approx(expect)
    # the attack section lists the bounded attack next to the unbounded one
    rep = build_report(run["store"], run["run_id"])
    probes = {r["probe"] for r in rep["sections"]["attacks"]["rows"]}
    assert {"pgd", "oracle-bounded"} <= probes
    assert "oracle-bounded" in run["html"]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="oracle"):
        attacks.create("oracle-bounded", {})
    with pytest.raises(ConfigError, match="cannot itself"):
        attacks.create("oracle-bounded", {"oracle": {"name": "digits-cnn"},
                                          "attack": {"name": "oracle-bounded"}})  # fmt: skip
    with pytest.raises(ConfigError, match="no parameter"):
        attacks.create("oracle-bounded", {"oracle": {"name": "digits-cnn"},
                                          "attack": {"name": "pgd", "params": {"stpes": 3}}})  # fmt: skip
    atk = attacks.create(
        "oracle-bounded", {"oracle": {"name": "small-cnn", "params": {"side": 28}}}
    )
    d = datasets.create("digits", {"split": "test"})
    with pytest.raises(DomainError, match="oracle domain"):
        atk(models.create("digits-mlp"), d.x[:4], d.y[:4], ThreatModel("inf", 0.1),
            rng=ExampleRNG.from_seed(0, d.ids[:4]))  # fmt: skip
