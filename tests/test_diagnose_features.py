"""The diagnosis plumbing: features read by hooks, layer errors, unsharded diagnosis units."""

from __future__ import annotations

import pytest
import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import models
from robustlab.diagnose.features import check_layers, extract, layer_names
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite
from robustlab.runner.plan import data_key, plan
from robustlab.runner.validation import count_units

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mlp():
    return models.create("digits-mlp", {"seed": 0})


def test_features_equal_manual_forward(mlp) -> None:
    from robustlab.data.sources import digits

    x = digits(split="test").x[:50]
    f = extract(mlp, x, ("penultimate", "input"), chunk=16)
    logits = mlp.logits(x).detach()
    assert torch.allclose(f["logits"], logits, atol=1e-6)
    # the penultimate representation is the input of the last Linear: applying it gives logits
    last = [m for m in mlp.module.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert torch.allclose(last(f["penultimate"]).detach(), logits, atol=1e-5)
    assert torch.equal(f["input"], x.flatten(1).float())
    named = layer_names(mlp)[3]  # the first submodule
    g = extract(mlp, x, (named,))
    assert g[named].shape[0] == 50


def test_unknown_layer_lists_layers(mlp) -> None:
    with pytest.raises(ConfigError, match=r"no layer 'nope'; its layers: logits, penultimate"):
        check_layers(mlp, ["nope"])

    class BlackBox:
        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3]

    with pytest.raises(CapabilityError, match="black-box"):
        check_layers(BlackBox(), ["penultimate"])
    assert set(extract(BlackBox(), torch.ones(4, 1, 2, 2), ())) == {"logits"}


def test_diagnosis_units_are_unsharded_and_run_once_without_levels() -> None:
    suite = Suite(
        name="d",
        models=[ModelSpec(name="digits-mlp", replicates=[0, 1])],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=[
            ProbeSpec(kind="diagnosis", name="ood"),
            ProbeSpec(kind="diagnosis", name="calibration", levels=[0, 3]),
        ],
        shard_size=100,
    )
    shards = {data_key(suite.data): 4}
    units = plan(suite, shards)
    diag = [u for u in units if u.kind == "diagnosis"]
    assert len(diag) == 2 * 3  # per replicate: ood once (level 0) + calibration at 2 levels
    assert {u.shard for u in diag} == {0}
    assert sorted({u.level for u in diag}) == [0.0, 3.0]
    assert count_units(suite, shards) == len(units)


def test_feature_cache_is_keyed_by_objects_not_names(mlp) -> None:
    """Two datasets with the same name and ids but other contents (two configurations of one
    source), or another model, never share cached features; the same objects share one pass."""
    from robustlab.core.rng import ExampleRNG
    from robustlab.data.base import Dataset
    from robustlab.data.sources import digits
    from robustlab.diagnose.base import DiagnosisEnv
    from robustlab.runner.context import Context

    d = digits(split="test")
    a = Dataset(d.x[:40], d.y[:40], "same")
    b = Dataset(1 - d.x[:40], d.y[:40], "same")  # same name, ids and size; other pixels
    other = models.create("digits-mlp", {"seed": 1})
    ctx = Context()
    ctx.start_run("r")
    unit = plan(
        Suite(
            name="d",
            models=[ModelSpec(name="digits-mlp")],
            data=ComponentSpec(name="digits"),
            probes=[ProbeSpec(kind="diagnosis", name="ood")],
        ),
        {data_key(ComponentSpec(name="digits")): 1},
    )[-1]
    env = DiagnosisEnv(unit, ctx, ExampleRNG.from_seed(0, a.ids))
    fa, fb = env.features(mlp, a)["logits"], env.features(mlp, b)["logits"]
    assert torch.allclose(fa, mlp.logits(a.x).detach(), atol=1e-6)
    assert torch.allclose(fb, mlp.logits(b.x).detach(), atol=1e-6)
    fo = env.features(other, a)["logits"]
    assert torch.allclose(fo, other.logits(a.x).detach(), atol=1e-6)
    assert env.features(mlp, a)["logits"] is fa  # the same objects: one pass, shared


def test_diagnosis_records_stay_out_of_accuracy_tables(tmp_path) -> None:
    """A diagnosis's records (OOD examples, probe rows) are not accuracies: the CLI table and the
    report's core tables leave them out and name them; their own report section reads them."""
    from typer.testing import CliRunner

    from robustlab.cli import app
    from robustlab.report import build_report
    from robustlab.store import Store

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: d\nmodel: {name: digits-mlp}\ndata: {name: digits, params: {split: test}}\n"
        "probes:\n  - kind: diagnosis\n    name: ood\n    label: ood-fashion\n"
        "    params: {detectors: [msp, energy], ood: {name: fashion-mnist, params: "
        "{split: test, limit: 100, size: 8}}}\n"
    )
    db = tmp_path / "runs.db"
    r = CliRunner().invoke(
        app,
        ["run", str(suite), "--store", str(db), "--out", str(tmp_path / "rep"), "--no-progress"],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    assert "diagnoses (see the report): ood-fashion" in r.output
    table = [line for line in r.output.splitlines() if "│" in line]
    assert any(" clean " in line for line in table)
    assert not any("ood-fashion" in line for line in table)
    st = Store(f"sqlite:///{db}")
    run = st.runs()["id"].iloc[0]
    content = build_report(st, run)
    assert [row["kind"] for row in content["sections"]["metrics"]["rows"]] == ["clean"]
    assert content["summary"]["models"][0]["clean_accuracy"] > 0.9
    assert {row["detector"] for row in content["extensions"]["detection"]["data"]["rows"]} == {
        "msp",
        "energy",
    }
