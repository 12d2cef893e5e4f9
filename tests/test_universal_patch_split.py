"""A universal patch in a suite is fitted on the split the probe names (default: train), never on
the examples it scores (the audit: it was fitted on the very test shard it was evaluated on)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlab.attacks.patch import UniversalPatch
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import ThreatModel
from robustlab.runner import Suite, run_suite
from robustlab.runner.context import Context
from robustlab.runner.fitting import fitted_attack
from robustlab.runner.plan import data_key, plan
from robustlab.runner.validation import validate_suite
from robustlab.store import Store

SUITE = """name: uni
model: {{name: digits-cnn}}
data: {{name: digits{data}}}
shard_size: 180
probes:
  - {{kind: attack, name: universal_patch, params: {{steps: 5{params}}}, levels: [0.15]}}
"""


def _suite(data: str = "", params: str = "") -> Suite:
    return Suite.from_yaml(SUITE.format(data=data, params=params))


def _units(suite: Suite) -> list:
    n = -(-len(datasets.create(suite.data.name, suite.data.params)) // suite.shard_size)
    return [u for u in plan(suite, {data_key(suite.data): n}) if u.probe is not None]


def test_default_fit_split_is_train() -> None:
    assert inspect.signature(UniversalPatch).parameters["fit_split"].default == "train"
    assert attacks.create("universal_patch").fit_split == "train"


def test_fitting_examples_are_disjoint_from_the_scored_ones(tmp_path: Path) -> None:
    suite = _suite()
    units = _units(suite)
    assert len(units) == 2  # two scored shards of the test split share one fitted patch
    ctx = Context()
    ctx.start_run("r")
    fits = []
    for u in units:
        model = ctx.model(u.model, u.replicate)
        atk = ctx.component(attacks, u.probe)
        fitted, fit = fitted_attack(u, ctx, atk, model)
        scored = ctx.shard(u.data, u.shard, u.shard_size)
        assert not set(fit.ids.tolist()) & set(scored.ids.tolist())
        assert fitted.patch_ is not None and atk.patch_ is None  # the shared component stays unfit
        fits.append((fitted, fit))
    test_ids = set(datasets.create("digits", {"split": "test"}).ids.tolist())
    train_ids = set(datasets.create("digits", {"split": "train"}).ids.tolist())
    fit_ids = set(fits[0][1].ids.tolist())
    assert fit_ids <= train_ids and not fit_ids & test_ids and len(fit_ids) == 512
    assert fits[0][0] is fits[1][0]  # fitted once per run, not per shard
    # through the runner: every record says where its patch was fitted
    store = Store(tmp_path / "s.db")
    df = store.records(run_suite(suite, store, progress=False))
    att = df[df.kind == "attack"]
    assert len(att) == len(test_ids)
    assert set(att["x.fit_split"]) == {"train"} and set(att["x.fit_examples"]) == {512}


@pytest.mark.parametrize(
    ("data", "params", "match"),
    [
        (", params: {split: all}", "", "no examples outside the scored data"),
        ("", ", fit_split: test", "no examples outside the scored data"),  # the scored split
    ],
)
def test_fit_split_that_leaves_nothing_is_refused_before_the_run(
    tmp_path: Path, data: str, params: str, match: str
) -> None:
    suite = _suite(data=data, params=params)
    ctx = Context()
    u = _units(suite)[0]
    with pytest.raises(ConfigError, match=match):
        fitted_attack(u, ctx, ctx.component(attacks, u.probe), ctx.model(u.model, 0))
    with pytest.raises(ConfigError, match=match):
        validate_suite(suite)
    (tmp_path / "s.yaml").write_text(suite.to_yaml())
    cli = str(Path(sys.executable).parent / "robustlab")
    r = subprocess.run([cli, "validate", "s.yaml"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 2 and match in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_a_patch_fitted_elsewhere_is_applied_unchanged() -> None:
    """The fitted copy applies its own patch (no refit on the scored batch)."""
    ctx = Context()
    u = _units(_suite())[0]
    model = ctx.model(u.model, 0)
    fitted, _ = fitted_attack(u, ctx, ctx.component(attacks, u.probe), model)
    data = ctx.shard(u.data, 0, u.shard_size)
    res = fitted(
        model, data.x, data.y, ThreatModel("inf", 0.15), rng=ExampleRNG.from_seed(0, data.ids)
    )
    side = fitted.patch_.shape[-1]
    changed = (res.x_adv != data.x).flatten(2).any(1)  # pixels changed, per example
    assert int(changed.sum(1).max()) <= side * side
    # the same patch values appear in the attacked images (top-left of the window holds patch[0,0])
    assert torch.isin(fitted.patch_.flatten(), res.x_adv.flatten()).float().mean() > 0.5
