"""Suites and the CLI: validation, bad input (one line, exit 2, store intact) and the demo."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import models
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

CLI = str(Path(sys.executable).parent / "robustlab")

GOOD = """
name: t
model: {name: digits-mlp}
data: {name: digits}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 2]}
  - {kind: attack, name: fgsm, levels: [0.1]}
"""


def robustlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_yaml_and_python_suites_are_the_same():
    a = Suite.from_yaml(GOOD)
    b = Suite.parse(
        {
            "name": "t",
            "models": [{"name": "digits-mlp"}],
            "data": {"name": "digits"},
            "probes": [
                {"kind": "perturbation", "name": "gaussian_noise", "levels": [1, 2]},
                {"kind": "attack", "name": "fgsm", "levels": [0.1]},
            ],
        }
    )
    assert a == b and a.content_hash() == b.content_hash()
    assert Suite.from_yaml(a.to_yaml()) == a


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\nmodel: {name: digits-mlp\n", "malformed YAML (line"),
        ("- a\n- b\n", "a suite must be a YAML mapping"),
        (GOOD + "colour: red\n", "colour: Extra inputs are not permitted"),
        (GOOD.replace("levels: [0.1]", "levels: fast"), "probes.1.levels"),
        (GOOD.replace("kind: attack", "kind: atack"), "probes.1.kind"),
        (
            "name: t\nmodel: {name: digits-mlp}\ndata: {name: digits}\nslices: [{by: a, where: {b: [1]}}]",
            "exactly one of",
        ),
        ("!!python/object/apply:os.system ['echo hi']", "malformed YAML"),
    ],
)
def test_malformed_suites_name_the_problem(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Suite.from_yaml(text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("gaussian_noise", "gausian_noise"), "did you mean 'gaussian_noise'"),
        (
            ("{kind: attack, name: fgsm", "{kind: attack, name: fgsm, params: {stepz: 2}"),
            "no parameter 'stepz'",
        ),
        (("name: digits-mlp", "name: digits-mlp, params: {epochs: many}"), "'epochs' must be int"),
    ],
)
def test_component_errors_are_caught_before_running(change, message, tmp_path):
    suite = Suite.from_yaml(GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message):
        run_suite(suite, Store(tmp_path / "s.db"), progress=False)
    assert Store(tmp_path / "s.db").runs().empty  # nothing was stored


@models.register("test-three-class-mlp")
def three_class_mlp(seed: int = 0) -> object:
    """A digits MLP cut to three outputs (so its output shape mismatches 10 labels)."""
    from robustlab.models.torch_adapter import TorchClassifier

    net = models.create("digits-mlp", {"seed": seed}).module
    head = torch.nn.Sequential(net, torch.nn.Linear(10, 3))
    return TorchClassifier(head, 3)


def test_output_shape_mismatch_is_a_clear_error(tmp_path):
    suite = Suite.from_yaml(GOOD.replace("digits-mlp", "test-three-class-mlp"))
    with pytest.raises(ModelOutputError, match="does not match the labels"):
        run_suite(suite, Store(tmp_path / "s.db"), progress=False)


@pytest.fixture()
def workdir(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    return tmp_path


def test_cli_bad_input_is_one_line_exit_2_and_store_intact(workdir):
    r = robustlab("run", "good.yaml", "--store", "s.db", "--no-progress", cwd=workdir)
    assert r.returncode == 0, r.stderr
    db = workdir / "s.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    (workdir / "bad.yaml").write_text(GOOD.replace("fgsm", "fgsn"))
    (workdir / "broken.yaml").write_text("name: [unclosed\n")
    cases = [
        (["run", "bad.yaml"], "unknown attacks 'fgsn'; did you mean 'fgsm'?"),
        (["run", "broken.yaml"], "malformed YAML"),
        (["run", "missing.yaml"], "neither a file nor a bundled suite"),
        (["show", "nosuchrun"], "no run 'nosuchrun'"),
        (["list", "atacks"], "did you mean 'attacks'?"),
        (["run", "good.yaml", "--set", "probes.0.levels=oops"], "probes.0.levels"),
    ]
    for args, message in cases:
        r = (
            robustlab(*args, "--store", "s.db", cwd=workdir)
            if args[0] != "list"
            else robustlab(*args, cwd=workdir)
        )
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_cli_runs_show_compare_and_list(workdir):
    assert (
        robustlab("run", "good.yaml", "--store", "s.db", "--no-progress", cwd=workdir).returncode
        == 0
    )
    r = robustlab(
        "run", "good.yaml", "--store", "s.db", "--no-progress", "--set", "seed=1", cwd=workdir
    )
    assert r.returncode == 0, r.stderr
    runs = Store(workdir / "s.db").runs()
    assert len(runs) == 2 and set(runs.status) == {"complete"}
    a, b = runs.id.iloc[1], runs.id.iloc[0]
    r = robustlab("compare", a, b, "--store", "s.db", cwd=workdir)
    assert r.returncode == 0 and "gaussian_noise" in r.stdout and "B - A" in r.stdout
    r = robustlab("show", "latest", "--store", "s.db", cwd=workdir)
    assert r.returncode == 0 and b in r.stdout and "fingerprint" not in r.stderr
    r = robustlab("list", "attacks", cwd=workdir)
    assert "pgd" in r.stdout and "fgsm" in r.stdout
    r = robustlab("validate", "good.yaml", cwd=workdir)
    assert r.returncode == 0 and "valid" in r.stdout


def test_demo_end_to_end(tmp_path):
    r = robustlab("demo", "--quick", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "clean" in r.stdout and "pgd" in r.stdout
    db = tmp_path / "robustlab-runs" / "store.db"
    st = Store(db)
    run = st.runs().iloc[0]
    assert run.status == "complete"
    df = st.records(run.id)
    clean = df[df.kind == "clean"]
    assert len(clean) == 360 and clean.correct.mean() > 0.9  # the CNN learns digits
    pgd = df[(df.probe == "pgd") & (df.level == 0.2)]
    assert pgd.correct.mean() < clean.correct.mean() - 0.3  # and PGD breaks it
    reports = list((tmp_path / "robustlab-runs" / "reports").glob("*.html"))
    assert reports and str(reports[0].name) in r.stdout


def test_cli_refuses_pickled_model_files_unless_allowed(tmp_path):
    net = models.create("digits-mlp").module
    torch.save(net, tmp_path / "net.pt")  # a pickled nn.Module
    (tmp_path / "f.yaml").write_text(
        GOOD.replace("{name: digits-mlp}", "{name: file, params: {path: net.pt, num_classes: 10}}")
    )
    r = robustlab("run", "f.yaml", "--store", "s.db", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2 and "refusing to load net.pt" in r.stderr
    assert Store(tmp_path / "s.db").runs().empty
    r = robustlab(
        "run", "f.yaml", "--store", "s.db", "--no-progress", "--allow-pickle", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr


def test_probes_can_be_restricted_to_some_models():
    from robustlab.runner.plan import plan

    suite = Suite.from_yaml(
        "name: t\nmodels: [{name: digits-mlp}, {name: digits-cnn}]\ndata: {name: digits}\n"
        "probes: [{kind: attack, name: pgd, levels: [0.1], models: [digits-cnn]}]\n"
    )
    units = plan(suite, {'{"name": "digits", "params": {}}': 1})
    attacked = {u.model.display for u in units if u.probe is not None}
    assert attacked == {"digits-cnn"} and len(units) == 3  # 2 clean + 1 attack
    with pytest.raises(ConfigError, match=r"unknown models \['cnn'\]"):
        Suite.from_yaml(GOOD.replace("levels: [0.1]", "levels: [0.1], models: [cnn]"))


def test_every_bundled_suite_validates():
    from importlib.resources import files

    paths = sorted((files("robustlab") / "suites").iterdir(), key=str)
    suites = [p for p in paths if str(p).endswith(".yaml")]
    assert len(suites) >= 4
    for p in suites:
        Suite.from_yaml(str(p)).validate_components()  # names, parameters and types
