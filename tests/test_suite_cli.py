"""Suites and the CLI: validation, bad input (one line, exit 2, store intact) and the demo."""

from __future__ import annotations

import hashlib
import os
import re
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


# validation: everything a run would reject is rejected before it starts (issue 16) -------------
def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``robustlab ARGS`` in-process (typer's runner), from ``cwd``: (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from robustlab.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    finally:
        os.chdir(old)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"{args}: uncaught {r.exception!r}") from r.exception
    return r.exit_code, r.stdout, r.stderr


def assert_rejected(args: list[str], message: str, cwd: Path, run_too: bool = True) -> None:
    """``validate`` and ``run`` both exit 2 with one stderr line containing ``message``, and
    ``run`` leaves no store behind."""
    commands = [["validate", *args]]
    if run_too:
        commands.append(["run", *args, "--store", "st.db", "--no-progress"])
    for cmd in commands:
        code, _, stderr = cli(*cmd, cwd=cwd)
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert code == 2, (cmd, code, stderr)
        assert len(lines) == 1 and message in lines[0], (cmd, stderr)
        assert "Traceback" not in stderr
    assert not (cwd / "st.db").exists()


def _suite_file(tmp_path: Path, text: str, name: str = "s.yaml") -> str:
    (tmp_path / name).write_text(text)
    return name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # non-finite floats anywhere: levels, parameters, nested parameters
        (("levels: [0.1]", "levels: [.nan]"), "probes.1.levels.0: Input should be a finite number"),
        (("levels: [1, 2]", "levels: [1, .inf]"), "probes.0.levels.1: Input should be a finite"),
        (
            ("{kind: attack, name: fgsm", "{kind: attack, name: pgd, params: {step_size: .nan}"),
            "attack 'pgd' parameter 'step_size' must be a finite number, got nan",
        ),
        (
            (
                "{kind: attack, name: fgsm",
                "{kind: attack, name: worst_of_k, params: {params: {smooth: .inf}}",
            ),
            "parameter 'params'['smooth'] must be a finite number",
        ),
        # level domains, declared by each component (family)
        (
            ("levels: [1, 2]", "levels: [1, 7]"),
            "level 1 (7) is outside its domain: the severity must be a finite number in [0, 5]",
        ),
        (("levels: [1, 2]", "levels: [-1]"), "the severity must be a finite number in [0, 5]"),
        (("levels: [0.1]", "levels: [-0.1]"), "the eps must be a finite number >= 0"),
        (
            ("name: gaussian_noise, levels: [1, 2]", "name: scale, levels: [-1]"),
            "severity (scale factor - 1) must be a finite number > -1",
        ),
        (
            (
                "name: gaussian_noise, levels: [1, 2]",
                "name: patch_corruption, params: {count: true}, levels: [1.5]",
            ),
            "the patch count must be an integer >= 0",
        ),
        (
            (
                "{kind: attack, name: fgsm",
                "{kind: attack, name: worst_of_k, params: {perturbation: fog}",
            ),
            None,  # valid: eps 0.1 is a fog severity
        ),
        (
            (
                "{kind: attack, name: fgsm, levels: [0.1]",
                "{kind: attack, name: worst_of_k, params: {perturbation: fog}, levels: [9]",
            ),
            "the severity must be a finite number in [0, 5]",
        ),
        (
            (
                "{kind: attack, name: fgsm, levels: [0.1]",
                "{kind: certifier, name: smoothing, levels: [-0.5]",
            ),
            "the radius must be a finite number >= 0",
        ),
        # parameter domains, from the signatures
        (
            ("{kind: attack, name: fgsm", "{kind: attack, name: pgd, params: {steps: 0}"),
            "'steps' must be greater than or equal to 1",
        ),
        (
            ("{kind: attack, name: fgsm", "{kind: attack, name: pgd, params: {step_size: -0.1}"),
            "'step_size' must be greater than 0",
        ),
        (
            ("name: digits-mlp}", "name: digits-mlp, params: {epochs: 2.5}}"),
            "'epochs' must be int, got float 2.5",
        ),
        (
            ("name: digits}", "name: digits, params: {test_fraction: 1.0}}"),
            "'test_fraction' must be less than 1",
        ),
        (
            ("name: digits}", "name: digits, params: {seed: 4294967296}}"),
            "'seed' must be less than or equal to 4294967295",
        ),
        # duplicates would run (and store) the same unit twice
        (("levels: [1, 2]", "levels: [2, 2]"), "levels list 2.0 twice"),
        (("name: digits-mlp}", "name: digits-mlp, replicates: [1, 1]}"), "replicates list 1 twice"),
        # seeds fit the store's 64-bit integers; replicates are model seeds (32-bit)
        (
            ("name: t\n", "name: t\nseed: 9223372036854775808\n"),
            "seed: Input should be less than or equal to 9223372036854775807",
        ),
        (("name: t\n", "name: t\nseed: -1\n"), "seed: Input should be greater than or equal to 0"),
        (
            ("name: digits-mlp}", "name: digits-mlp, replicates: [4294967296]}"),
            "replicates.0: Input should be less than or equal to 4294967295",
        ),
        # an evaluation set runs once: levels would be ignored
        (
            (
                "{kind: attack, name: fgsm, levels: [0.1]}",
                "{kind: evalset, name: e, data: {name: digits}, levels: [1]}",
            ),
            "evalset probe 'e' takes no levels",
        ),
    ],
)
def test_domains_are_checked_before_anything_runs(change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    if message is None:
        Suite.from_yaml(text).validate_components()
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        Suite.from_yaml(text).validate_components()


def test_run_suite_runs_the_same_validation(tmp_path):
    """A suite built in Python (no YAML, no CLI) with an out-of-domain level or NaN parameter is
    refused by run_suite before the store holds a run."""
    base = Suite.from_yaml(GOOD).model_dump()
    bad_level = base | {"probes": [{"kind": "perturbation", "name": "fog", "levels": [7]}]}
    bad_param = base | {
        "probes": [
            {
                "kind": "attack",
                "name": "pgd",
                "params": {"step_size": float("nan")},
                "levels": [0.1],
            }
        ]
    }
    for data, message in ((bad_level, "outside its domain"), (bad_param, "finite number")):
        store = Store(tmp_path / "s.db")
        with pytest.raises(ConfigError, match=message):
            run_suite(Suite.parse(data), store, progress=False)
        assert store.runs().empty


def test_caps_on_levels_and_units(tmp_path):
    many = ", ".join(str(i / 1000) for i in range(1001))
    assert_rejected(
        [_suite_file(tmp_path, GOOD.replace("levels: [0.1]", f"levels: [{many}]"))],
        "probes.1.levels: List should have at most 1000 items",
        tmp_path,
    )
    # 360 digits at one example per shard: (1 + 300 levels) x 360 shards > 100,000 units
    levels = ", ".join(str(i / 1000) for i in range(300))
    text = GOOD.replace("levels: [0.1]", f"levels: [{levels}]") + "shard_size: 1\n"
    assert_rejected([_suite_file(tmp_path, text)], "plans 109,080 work units", tmp_path)


def test_slice_columns_must_exist(tmp_path):
    text = GOOD + "slices: [{by: colour}]\n"
    assert_rejected(
        [_suite_file(tmp_path, text)],
        "slice 'colour': data 'digits' has no metadata column 'colour' (columns: ink, label)",
        tmp_path,
    )
    text = GOOD + "slices: [{name: x, where: {shade: [1]}}]\n"
    assert_rejected([_suite_file(tmp_path, text)], "no metadata column 'shade'", tmp_path)
    code, out, _ = cli(
        "validate", _suite_file(tmp_path, GOOD + "slices: [{by: ink}]\n"), cwd=tmp_path
    )
    assert code == 0 and "is valid" in out


def test_seed_option_too_large_for_the_store(tmp_path):
    name = _suite_file(tmp_path, GOOD)
    assert_rejected(
        [name, "--seed", str(2**63)], "seed: Input should be less than or equal to", tmp_path
    )


def _bomb() -> str:
    """The classic billion-laughs document: 9 levels of 10 aliases, 1.4 KB, 10^9 leaves."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return (
        "\n".join(lines)
        + "\nname: t\nmodel: {name: digits-mlp}\ndata: {name: digits, params: {x: *a9}}\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), "contains NUL bytes"),
        (
            b"name: t\nmodel: {name: digits-mlp}\ndata: {name: \xff\xfe}\n",
            "is not UTF-8 text (byte 0xff at offset",
        ),
        (b"name: t\n# " + b"x" * 1_000_001 + b"\n", "is larger than 1,000,000 bytes"),
        (_bomb().encode(), "expands to more than 100,000 YAML nodes"),
        (
            b"name: t\nmodel: {name: digits-mlp}\ndata: " + b"[" * 200 + b"]" * 200,
            "nested more than 50 levels deep",
        ),
        (
            b"name: t\nmodel: {name: digits-mlp}\ndata: " + b"[" * 5000 + b"]" * 5000,
            "nesting depth",
        ),
        (
            b"name: t\nmodel: &m {name: digits-mlp, params: {x: [*m]}}\ndata: {name: digits}",
            "recursive YAML alias",
        ),
        (
            b"name: t\nmodel: {name: digits-mlp}\ndata: {name: digits}\nx: !!binary aGVsbG8=",
            "unsupported YAML value of type bytes",
        ),
        (
            b"name: 2026-12-07\nmodel: {name: digits-mlp}\ndata: {name: digits}",
            "unsupported YAML value of type date",
        ),
        (
            b"name: t\nmodel: {name: digits-mlp}\ndata: {name: digits}\n\tbad: tab\n",
            "malformed YAML (line 4",
        ),
    ],
)
def test_hostile_suite_files_are_one_line_errors(content, message, tmp_path):
    assert len(_bomb()) < 1500
    (tmp_path / "s.yaml").write_bytes(content)
    assert_rejected(["s.yaml"], message, tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("probes.5.levels=[1]", "index 5 is out of range (probes has 2 items)"),
        ("probes[5].levels=[1]", "index 5 is out of range (probes has 2 items)"),
        ("probes.x.levels=[1]", "probes is a list: index it with a number, not 'x'"),
        ("probes[x].levels=[1]", "list index [x] must be an integer >= 0"),
        ("probes[-1].levels=[1]", "list index [-1] must be an integer >= 0"),
        ("probes[0.levels=[1]", "unbalanced '['"),
        ("probes]0.levels=[1]", "unbalanced ']'"),
        ("probes..levels=[1]", "empty path part"),
        ("probes.0.=1", "empty path part"),
        (".seed=1", "empty path part"),
        ("=1", "non-empty KEY"),
        ("seed.x=1", "seed is a int (0), so it has no field 'x'"),
        ("name.x.y=1", "name is a str ('t'), so it has no field 'x'"),
        ("probes.0.levels.0.x=1", "probes[0].levels[0] is a float (1.0), so it has no field 'x'"),
        ("data[0]=1", "data is a mapping, not a list"),
        ("seed", "--set needs KEY=VALUE"),
        ("probes.0.levels=[1, 2", "malformed YAML"),
        ("seed=2**70", "seed: Input should be a valid integer"),
        ("seed=99999999999999999999", "seed: Input should be less than or equal to"),
        ("probes.0.levels=[.nan]", "probes.0.levels.0: Input should be a finite number"),
    ],
)
def test_malformed_set_overrides_are_one_line_errors(override, message, tmp_path):
    assert_rejected([_suite_file(tmp_path, GOOD), "--set", override], message, tmp_path)


def test_set_paths_dotted_and_bracketed_agree(tmp_path):
    from robustlab.runner.loading import load_suite

    name = tmp_path / _suite_file(tmp_path, GOOD)
    a = load_suite(str(name), ["probes.1.levels=[0.2]", "models.0.params.epochs=3"])
    b = load_suite(str(name), ["probes[1].levels=[0.2]", "models[0].params.epochs=3"])
    assert a == b and a.probes[1].levels == [0.2] and a.models[0].params == {"epochs": 3}
    c = load_suite(
        str(name), ["probes[1].data.name=digits", "probes.1.kind=evalset", "probes.1.levels=[]"]
    )
    assert c.probes[1].data is not None and c.probes[1].data.name == "digits"
    # GOOD is written with the `model:` shorthand: `model.` addresses its one model
    d = load_suite(str(name), ["model.params.epochs=3"])
    assert d == a.model_copy(update={"probes": d.probes}) and d.models[0].params == {"epochs": 3}
    e = load_suite(str(name), ["model={name: digits-logreg}"])
    assert [m.name for m in e.models] == ["digits-logreg"]


def test_set_model_on_a_suite_of_several_models(tmp_path):
    two = GOOD.replace(
        "model: {name: digits-mlp}", "models: [{name: digits-mlp}, {name: digits-cnn}]"
    )
    assert_rejected([_suite_file(tmp_path, two), "--set", "model.params.epochs=3"],
                    "the suite has 2 models: use models[i]", tmp_path)  # fmt: skip


def test_yaml_11_booleans_stay_strings_for_string_parameters():
    """Decision: suites read booleans as YAML 1.2 does (only true/false), so ``cache: off`` is the
    string 'off'; bool parameters still accept yes/no/on/off. A real boolean given to a string
    parameter (``cache: false``) is refused with a hint to quote it."""
    from robustlab.core.registry import attacks, check_params, models
    from robustlab.runner.loading import load_yaml

    assert load_yaml("a: off\nb: no\nc: yes\nd: on\ne: true\nf: False", "<t>") == {
        "a": "off", "b": "no", "c": "yes", "d": "on", "e": True, "f": False,
    }  # fmt: skip
    gen = models.get("http-generator")
    base = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    assert check_params(gen, base | {"cache": "off"}, "g")["cache"] == "off"
    with pytest.raises(ConfigError, match="must be str, got bool False .*quote the string"):
        check_params(gen, base | {"cache": False}, "g")
    pgd = attacks.get("pgd")
    assert check_params(pgd, {"early_stop": "off", "random_start": "yes"}, "pgd") == {
        "early_stop": False, "random_start": True,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="'early_stop' must be bool, got str 'maybe'"):
        check_params(pgd, {"early_stop": "maybe"}, "pgd")


@pytest.mark.parametrize(
    ("norm", "expected"),
    [
        ("2", "2"),
        ("l2", "2"),
        ("L2", "2"),
        ("1", "1"),
        ("inf", "inf"),
        ("linf", "inf"),
        (".inf", "inf"),
        ("2.0", "2"),
        ('"inf"', "inf"),
    ],
)
def test_numeric_and_named_norms_are_accepted(norm, expected):
    s = Suite.from_yaml(
        GOOD.replace("{kind: attack, name: fgsm,", f"{{kind: attack, name: fgsm, norm: {norm},")
    )
    assert s.probes[1].norm == expected


@pytest.mark.parametrize("norm", ["3", "true", "[2]", "l7", ".nan"])
def test_unknown_norms_are_refused(norm):
    with pytest.raises(ConfigError, match="probes.1.norm"):
        Suite.from_yaml(
            GOOD.replace("{kind: attack, name: fgsm,", f"{{kind: attack, name: fgsm, norm: {norm},")
        )


def _doc_suites() -> list[tuple[str, str]]:
    root = Path(__file__).resolve().parents[1]
    out = []
    for md in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for i, m in enumerate(
            re.finditer(r"```ya?ml\n(.*?)```", md.read_text(encoding="utf-8"), re.S)
        ):
            out.append((f"{md.name}#{i}", m.group(1)))
    return out


@pytest.mark.parametrize(("where", "text"), _doc_suites(), ids=[w for w, _ in _doc_suites()])
def test_every_yaml_snippet_in_the_docs_validates(where, text):
    """README/docs YAML blocks are suites or suite fragments: fragments are completed with a small
    base suite (their own keys win) and must validate; whole suites load their data too."""
    from robustlab.runner.loading import load_yaml
    from robustlab.runner.suite import Suite as S
    from robustlab.runner.validation import validate_suite

    data = load_yaml(text, where)
    if isinstance(data, dict) and "base" in data:  # a `robustlab train` spec (docs/training.md)
        from robustlab.training.command import check_spec

        check_spec(data, where)
        return
    assert isinstance(data, dict) and set(data) <= set(S.model_fields) | {"model"}, where
    whole = {"name", "data"} <= set(data) and ({"model", "models"} & set(data))
    base: dict = {"name": "snippet", "model": {"name": "digits-mlp"}, "data": {"name": "digits"}}
    if {"model", "models"} & set(data):
        base.pop("model")
    suite = Suite.parse(base | data, where)
    if whole:
        validate_suite(suite)
    else:
        suite.validate_components()


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        # a white-box attack on a model without gradients: every record would be an error, and
        # the attack's accuracy 0 over them (the run used to start and exit 3)
        (GOOD.replace("digits-mlp", "digits-logreg"),
         "attack probe 'fgsm' needs input gradients, but model 'digits-logreg'"),
        # an infinity-norm eps wider than the model's input domain [0, 1]
        (GOOD.replace("levels: [0.1]", "levels: [8]"), "exceeds the width 1 of model"),
    ],
    ids=["white-box-on-black-box", "eps-beyond-domain"],
)  # fmt: skip
def test_checks_on_loaded_models_refuse_before_the_store_opens(suite, message, tmp_path):
    """What only a loaded model can tell is checked before the store is opened: exit 2, one
    line, no store file and no report folder (``validate`` does not load models)."""
    name = _suite_file(tmp_path, suite)
    code, _, stderr = cli("run", name, "--store", "st.db", "--no-progress", cwd=tmp_path)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    # `validate` does not load models; `validate --models` runs the same checks as run
    assert cli("validate", name, cwd=tmp_path)[0] == 0
    code, _, stderr = cli("validate", name, "--models", cwd=tmp_path)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
