"""``robustlab gate`` and ``assert_robust``: real runs of the small digits suite (clean, Gaussian
noise at 2 severities, FGSM at eps 0.1; 360 test digits) into a tmp store.

The baseline is the digits CNN; the "worse" candidate is the digits MLP under the same label (as a
new model version would be); the "same" candidate is the CNN again with another suite seed (other
noise draws). The gate's verdicts are recomputed independently: the sign-flip distribution of 0/1
correctness differences is exactly a binomial one (the exact sign test, ``scipy.stats.binomtest``
on the examples where the runs disagree), checked on a tiny case against an enumeration of all
sign flips too; q-values with ``scipy.stats.false_discovery_control``.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy.stats import binomtest, false_discovery_control
from typer.testing import CliRunner

from conftest import make_small_suite
from robustlab.cli import app
from robustlab.core.errors import ConfigError
from robustlab.gate import gate, parse_max_drop, suite_differences
from robustlab.runner import ModelSpec, run_suite
from robustlab.store import Store
from robustlab.testing.gate import assert_robust
from robustlab.testing.pytest_plugin import robust_gate  # noqa: F401 - the plugin's fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def suite(model: str = "digits-cnn", seed: int = 0, **kw):
    s = make_small_suite(model=model, seed=seed, pgd_eps=(), **kw)
    return s.model_copy(update={"models": [ModelSpec(name=model, label="prod")]})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("gate") / "s.db"
    st = Store(path)
    ids = {
        "base": run_suite(suite(), st, progress=False),
        "worse": run_suite(suite("digits-mlp"), st, progress=False),
        "same": run_suite(suite(seed=1), st, progress=False),
    }
    return st, str(path), ids


def sign_test(xa: np.ndarray, xb: np.ndarray) -> float:
    """Exact two-sided p-value of the paired sign-flip test of 0/1 outcomes (McNemar's exact
    test): only the k disagreeing examples change under a flip, and their sum is 2 Bin(k, 1/2) - k."""
    d = xb - xa
    k = int((d != 0).sum())
    return 1.0 if k == 0 else binomtest(int((d > 0).sum()), k, 0.5).pvalue


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["gate", *args], env={"COLUMNS": "200", **(env or {})})


def independent_verdicts(st: Store, a: str, b: str, max_drop: float) -> dict[tuple, bool]:
    """Regression per (kind, probe, level), recomputed from the records with scipy only."""
    ra, rb = st.records(a), st.records(b)
    keys, ps, drops = [], [], []
    for key, ga in ra.groupby(["kind", "probe", "level"]):
        gb = rb.set_index(["kind", "probe", "level"]).loc[key]
        xa = ga.sort_values("example_id")["correct"].to_numpy(float)
        xb = gb.sort_values("example_id")["correct"].to_numpy(float)
        ps.append(sign_test(xa, xb))
        keys.append(key)
        drops.append(xa.mean() - xb.mean())
    q = false_discovery_control(ps)
    return {k: bool(qi <= 0.05 and d > max_drop) for k, qi, d in zip(keys, q, drops, strict=True)}


def test_worse_candidate_fails_with_junit_and_summary(runs, tmp_path) -> None:
    st, path, ids = runs
    junit, md = tmp_path / "gate.xml", tmp_path / "summary.md"
    r = invoke("--baseline", ids["base"], "--candidate", ids["worse"], "--store", path,
               "--max-drop", "2pp", "--junit", str(junit), "--summary", str(md))  # fmt: skip
    assert r.exit_code == 1, r.output
    expected = independent_verdicts(st, ids["base"], ids["worse"], 0.02)
    assert sum(expected.values()) == 3  # fgsm, noise 1 and 3: clean (drop 1.4 pp) is n.s.
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("failures") == "3"
    (ts,) = root.findall("testsuite")
    cases = ts.findall("testcase")
    assert ts.get("tests") == "4" and len(cases) == 4 and ts.get("failures") == "3"
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    want = {f"{p}[level={lv:g}] accuracy" for (_, p, lv), bad in expected.items() if bad}
    assert failed == want
    for c in cases:
        f = c.find("failure")
        assert f is None or ("baseline" in f.get("message") and f.get("type") == "regression")
    text = md.read_text()
    assert text.startswith("## robustlab gate: FAILED: 3 regressions")
    assert text.count(":x: regression") == 3 and "| clean/clean | 0 | accuracy |" in text
    assert "FAILED: 3 regressions" in r.output


def test_p_values_match_the_exact_sign_test_and_the_practical_threshold(runs) -> None:
    st, _, ids = runs
    res = gate(st.records(ids["base"]), st.records(ids["worse"]), max_drop=0.03, n_perm=20_000)
    ra, rb = st.records(ids["base"]), st.records(ids["worse"])
    for r in res.rows.itertuples():
        xa = ra[(ra.probe == r.probe) & (ra.level == r.level)].sort_values("example_id")
        xb = rb[(rb.probe == r.probe) & (rb.level == r.level)].sort_values("example_id")
        ref = sign_test(xa["correct"].to_numpy(float), xb["correct"].to_numpy(float))
        se = np.sqrt(max(ref, 1e-4) * (1 - ref) / 20_000)  # Monte Carlo error of 20 000 flips
        assert r.p_value == pytest.approx(ref, abs=4 * se + 1 / 20_001), (r.probe, r.level, ref)
        assert r.drop == pytest.approx(xa["correct"].mean() - xb["correct"].mean(), abs=1e-12)
    np.testing.assert_allclose(res.rows["q_value"], false_discovery_control(res.rows["p_value"]))
    # 3 pp: gaussian_noise at severity 1 (drop 2.8 pp, significant) is no longer a regression
    expected = independent_verdicts(st, ids["base"], ids["worse"], 0.03)
    got = {(r.kind, r.probe, r.level): bool(r.regression) for r in res.rows.itertuples()}
    assert got == expected and sum(got.values()) == 2
    assert gate(ra, rb, max_drop=0.3).passed  # FGSM's 26 pp drop is below a 30 pp threshold
    # error rate (lower is better): the same rows regress, its drop is the error's rise
    many = gate(ra, rb, ["accuracy", "error_rate", "attack_success_rate"], max_drop=0.03)
    rows = many.rows.set_index(["probe", "level", "metric"])
    for (probe, level, metric), r in rows.iterrows():
        if metric == "error_rate":
            acc = rows.loc[(probe, level, "accuracy")]
            assert r["drop"] == pytest.approx(acc["drop"]) and r["regression"] == acc["regression"]
    asr = rows.xs("attack_success_rate", level="metric")
    assert asr["p_value"].isna().sum() == 3  # not an attack: no value, no test, "n/a", skipped
    fgsm = rows.loc[("fgsm", 0.1, "attack_success_rate")]  # lower is better: a rise is a drop
    assert fgsm["drop"] > 0.2 and fgsm["regression"]  # the MLP is fooled more often
    ts = many.junit().find("testsuite")
    assert ts.get("skipped") == "3" and len(list(ts.iter("skipped"))) == 3
    assert many.markdown().count("| n/a |") == 3


def test_exact_sign_flip_enumeration_on_a_tiny_real_case(runs) -> None:
    """14 FGSM examples where CNN and MLP differ, plus 6 where they agree: all 2^14 flips."""
    st, _, ids = runs
    ra = st.records(ids["base"]).query("probe == 'fgsm'").sort_values("example_id")
    rb = st.records(ids["worse"]).query("probe == 'fgsm'").sort_values("example_id")
    d = rb["correct"].to_numpy(float) - ra["correct"].to_numpy(float)
    idx = np.r_[np.flatnonzero(d < 0)[:10], np.flatnonzero(d > 0)[:4], np.flatnonzero(d == 0)[:6]]
    ids_ = ra["example_id"].to_numpy()[idx]
    sa, sb = ra[ra.example_id.isin(ids_)], rb[rb.example_id.isin(ids_)]
    nz = d[idx][d[idx] != 0]
    flips = np.array(list(itertools.product([-1, 1], repeat=len(nz))))
    exact = np.mean(np.abs(flips @ nz) >= abs(nz.sum()) - 1e-9)
    res = gate(sa, sb, n_perm=200_000)
    (p,) = res.rows["p_value"]
    assert exact == pytest.approx(0.1796, abs=1e-3)  # 2 * P(Bin(14, 1/2) >= 10)
    assert p == pytest.approx(exact, abs=0.004)
    assert sign_test(sa.correct.to_numpy(float), sb.correct.to_numpy(float)) == pytest.approx(exact)
    assert res.passed  # -0.3 accuracy on 20 examples is not significant


def test_same_model_passes_and_github_step_summary(runs, tmp_path) -> None:
    st, path, ids = runs
    gh = tmp_path / "step.md"
    gh.write_text("earlier step\n")
    r = invoke("--baseline", ids["base"], "--candidate", ids["same"], "--store", path,
               "--max-drop", "0.02", env={"GITHUB_STEP_SUMMARY": str(gh)})  # fmt: skip
    assert r.exit_code == 0, r.output
    text = gh.read_text()
    assert text.startswith("earlier step\n## robustlab gate: PASSED")  # appended
    expected = independent_verdicts(st, ids["base"], ids["same"], 0.02)
    assert not any(expected.values())
    # the same run twice: identical records, every p-value 1
    res = gate(st.records(ids["base"]), st.records(ids["base"]))
    assert res.passed and (res.rows["p_value"] == 1.0).all()


def test_bad_input_is_one_line_exit_2(runs, tmp_path) -> None:
    st, path, ids = runs
    cases = {
        "no run 'nope'": ["--candidate", "nope"],
        "unknown metrics 'acuracy'; did you mean 'accuracy'?": ["--metric", "acuracy"],
        "no per-example values": ["--metric", "median_distance"],
        "--max-drop '2' is out of range": ["--max-drop", "2"],
        "--max-drop 'lots' is not a drop": ["--max-drop", "lots"],
    }
    for msg, extra in cases.items():
        args = {"--baseline": ids["base"], "--candidate": ids["worse"], "--store": path}
        for k, v in zip(extra[::2], extra[1::2], strict=True):
            args[k] = v
        r = invoke(*itertools.chain(*args.items()), "--junit", str(tmp_path / "j.xml"))
        assert r.exit_code == 2, (msg, r.output)
        assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not (tmp_path / "j.xml").exists()
    r = invoke("--baseline", ids["base"], "--candidate", ids["worse"], "--store", path,
               "--junit", str(tmp_path / "no" / "j.xml"))  # fmt: skip
    assert r.exit_code == 2 and "--junit" in r.output and "folder does not exist" in r.output
    other = run_suite(suite(noise_levels=(2,), fgsm_eps=(0.1, 0.2)), st, progress=False)
    r = invoke("--baseline", ids["base"], "--candidate", other, "--store", path)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "ran different suites" in r.output
    assert "probe perturbation/gaussian_noise levels: [1.0, 3.0] vs [2.0]" in r.output
    assert "probe attack/fgsm levels: [0.1] vs [0.1, 0.2]" in r.output


def test_suite_differences_name_data_probes_params_and_models() -> None:
    a = suite().model_dump(mode="json")
    assert suite_differences(a, a) == []
    b = make_small_suite(model="digits-mlp", pgd_eps=(0.1,), pgd_steps=3).model_dump(mode="json")
    b["data"]["params"]["split"] = "train"
    b["probes"][1]["params"] = {"norm": "2"}
    b["models"].append({"name": "digits-cnn", "replicates": [0]})
    got = suite_differences(a, b)
    assert got[0] == 'data: digits(split="test") vs digits(split="train")'
    assert got[1] == "probes: baseline only none; candidate only attack/pgd"
    assert got[2].startswith("probe attack/fgsm parameters:")
    assert got[3] == "models: prod vs digits-cnn, digits-mlp"
    one = suite("digits-mlp").model_dump(mode="json")
    one["models"][0]["label"] = None
    assert suite_differences(a, one) == []  # one model each: versions under any label


def test_parse_max_drop() -> None:
    assert parse_max_drop("2pp") == pytest.approx(0.02)
    assert parse_max_drop("2%") == pytest.approx(0.02)
    assert parse_max_drop("0.02") == parse_max_drop(0.02) == 0.02
    assert parse_max_drop("0") == 0.0
    for bad in ("-1pp", "1", "150pp", "nan", "2 points", True):
        with pytest.raises(ConfigError):
            parse_max_drop(bad)


def test_assert_robust_and_the_fixture(runs, robust_gate, tmp_path) -> None:  # noqa: F811
    st, _, ids = runs
    with pytest.raises(AssertionError, match=r"robustness regression: 3 row\(s\)") as e:
        assert_robust("digits-mlp", suite(), baseline=ids["base"], store=st, max_drop="2pp",
                      junit=tmp_path / "j.xml")  # fmt: skip
    assert "attack/fgsm level=0.1 accuracy: baseline 0.6472" in str(e.value)
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "3"
    res = robust_gate("digits-cnn", suite(seed=1), baseline=st.records(ids["base"]))
    assert res.passed and len(res.rows) == 4
    with pytest.raises(ConfigError, match="give the store"):
        assert_robust("digits-cnn", suite(), baseline=ids["base"])


def test_a_row_missing_in_the_candidate_fails(runs) -> None:
    """A candidate whose FGSM units failed (its records lack them) does not pass."""
    st, _, ids = runs
    rb = st.records(ids["same"])
    res = gate(st.records(ids["base"]), rb[rb.probe != "fgsm"])
    assert not res.passed
    (row,) = res.regressions.itertuples()
    assert row.probe == "fgsm" and row.status == "missing in B"
    (case,) = [c for c in res.junit().iter("testcase") if c.find("failure") is not None]
    assert case.find("failure").get("type") == "missing-in-candidate"
    assert "missing in candidate" in res.markdown()


def test_runs_of_several_models_are_gated_model_by_model(runs, tmp_path) -> None:
    """Two models per run, swapped between baseline and candidate: 'a' regresses, 'b' improves."""
    st, path, _ = runs

    def two(first: str, second: str):
        s = make_small_suite(noise_levels=(), pgd_eps=())
        models = [ModelSpec(name=first, label="a"), ModelSpec(name=second, label="b")]
        return s.model_copy(update={"models": models, "name": "two"})

    base = run_suite(two("digits-cnn", "digits-mlp"), st, progress=False)
    cand = run_suite(two("digits-mlp", "digits-cnn"), st, progress=False)
    junit = tmp_path / "j.xml"
    r = invoke("--baseline", base, "--candidate", cand, "--store", path, "--junit", str(junit))
    assert r.exit_code == 1, r.output
    cases = ET.parse(junit).getroot().find("testsuite").findall("testcase")
    assert len(cases) == 4  # 2 models x (clean, fgsm)
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failed == {("robustlab.gate.a.attack", "fgsm[level=0.1] accuracy")}
    assert "better" in r.output
