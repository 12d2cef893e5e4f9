"""The bundled text suites, and the longitudinal workflow (S32): one suite over model versions,
``robustlab run`` once per version, ``robustlab compare`` with paired bootstrap CIs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from robustlab.runner import Suite, run_suite
from robustlab.store import Store

CLI = str(Path(sys.executable).parent / "robustlab")
SUITES = files("robustlab") / "suites"


def robustlab(*args: str, cwd: Path) -> str:
    env = {**os.environ, "COLUMNS": "160"}
    p = subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def _suite(name: str, **overrides: object) -> Suite:
    data = Suite.from_yaml(Path(str(SUITES / f"{name}.yaml"))).model_dump(mode="json")
    return Suite.parse({**data, **overrides}, name)


@pytest.mark.parametrize("name", ["text-bbc", "text-bbc-versions"])
def test_text_suites_validate(name: str) -> None:
    _suite(name).validate_components()


def test_text_bbc_suite_runs_both_models_on_a_small_subset(tmp_path: Path) -> None:
    """The text-bbc suite on 10 articles, one level per probe; MiniLM with the test's cached
    short-text head (tests/test_text_models.py), so the run encodes about 50 short texts."""
    base = _suite("text-bbc").model_dump(mode="json")
    base["data"]["params"] |= {"limit": 10, "max_words": 40}
    base["models"][1]["params"] = {"data_params": {"max_words": 40, "limit": 400}}
    for p in base["probes"]:
        p["levels"] = p["levels"][-1:]
        if p["kind"] == "attack":  # MiniLM encodes every query: attacks on TF-IDF only here
            p["models"] = ["tfidf-logreg"]
    suite = Suite.parse(base, "text-bbc-small")
    st = Store(str(tmp_path / "s.db"))
    df = st.records(run_suite(suite, st, progress=False))
    assert set(df["model"]) == {"tfidf-logreg", "minilm-logreg"}
    probes = {"clean", "typo", "synonym", "word_deletion", "word_order", "misspelling", "dilution"}
    assert set(df["probe"]) == probes | {"textfooler", "random-substitution"}
    assert df["error"].isna().all() and len(df) == 2 * 10 * 7 + 10 * 2
    atk = df[df["kind"] == "attack"]  # edit budget 0.2 and query budget 300 respected
    assert (atk["x.edit_rate"] <= 0.2 + 1e-9).all() and (atk["x.queries"] <= 300).all()
    assert (atk["correct"] <= atk["x.clean_correct"]).all()  # an attack never fixes an error
    assert {"m.length", "m.topic", "m.n_words"} <= set(df.columns)
    clean = df[df["probe"] == "clean"].groupby("model")["correct"].mean()
    assert (clean > 0.6).all()


@pytest.mark.slow
def test_text_bbc_suite_runs_in_full(tmp_path: Path) -> None:
    st = Store(str(tmp_path / "s.db"))
    df = st.records(run_suite(_suite("text-bbc"), st, progress=False))
    acc = df[df["probe"] == "clean"].groupby("model")["correct"].mean()
    assert acc["tfidf-logreg"] > 0.8 and acc["minilm-logreg"] > 0.85  # measured 0.875, 0.933


def _paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 4000) -> tuple[float, float]:
    """Percentile bootstrap of mean(b - a) over examples (an independent numpy reference)."""
    rng = np.random.default_rng(1)
    d = b - a
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_model_versions_run_twice_and_compare_with_paired_cis(tmp_path: Path) -> None:
    store = str(tmp_path / "v.db")
    # the synonym probe without its meaning constraints: they load spaCy and MiniLM in each CLI
    # child (43 s vs 9 s a run); this test is about pairing versions, the constraints have theirs
    small = ["--set", "data.params.limit=200", "--set", "probes.2.params.constraints=false",
             "--store", store, "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    robustlab("run", "text-bbc-versions", *small, cwd=tmp_path)
    robustlab("run", "text-bbc-versions", "--set", "models.0.params.version=3", *small, cwd=tmp_path)  # fmt: skip
    st = Store(store)
    runs = st.runs().sort_values("id")["id"].tolist()
    assert len(runs) == 2
    out = robustlab("compare", runs[0], runs[1], "--store", store, cwd=tmp_path)
    a, b = st.records(runs[0]), st.records(runs[1])
    assert a["example_id"].tolist() == b["example_id"].tolist()  # same examples: paired
    fp = [st.run_info(r)["fingerprints"] for r in runs]
    assert fp[0] != fp[1]  # two different model versions
    rows = 0
    for (probe, level), ga in a.groupby(["probe", "level"]):
        gb = b[(b["probe"] == probe) & (b["level"] == level)]
        ja, jb = ga.sort_values("example_id"), gb.sort_values("example_id")
        diff = jb["correct"].mean() - ja["correct"].mean()
        lo, hi = _paired_ci(ja["correct"].to_numpy(), jb["correct"].to_numpy())
        m = re.search(rf"{probe}\s*│\s*{level:g}\s*│ accuracy │ [\d.]+ │ [\d.]+ │ ([+-][\d.]+) │ \[([+-][\d.]+), ([+-][\d.]+)\]", out)  # fmt: skip
        assert m, (probe, level, out)
        assert float(m.group(1)) == pytest.approx(diff, abs=1e-3)
        assert float(m.group(2)) == pytest.approx(lo, abs=0.012)
        assert float(m.group(3)) == pytest.approx(hi, abs=0.012)
        rows += 1
    assert rows == 6 and "better" in out  # version 3 (4x the training data) is better on clean
