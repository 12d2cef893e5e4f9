"""The report's fast paths give the numbers of the slow ones (issue 22): ``summarize`` in one pass
equals the per-group loop it replaced, bit for bit, on a real run; ``bootstrap_cis`` equals
``bootstrap_ci`` per sample (exact draws) or agrees within Monte-Carlo error (large samples, drawn
per distinct value) and stays deterministic per seed; ``Store.records`` equals the frame of the raw
records; and the whole report content is unchanged. Timings live in benchmarks/report_scaling.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from robustlab.core.records import frame
from robustlab.metrics import summarize
from robustlab.metrics.base import bootstrap_ci
from robustlab.metrics.summary import EXACT_DRAWS_MAX_N, bootstrap_cis, summarize_per_group
from robustlab.report import build_report, tables
from robustlab.runner import Suite, run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SUITE = """
name: report-speed
models:
  - {name: digits-mlp, replicates: [0, 1]}
data: {name: digits, params: {split: test}}
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [1, 3]}
  - {kind: attack, name: fgsm, levels: [0.05, 0.1]}
  - {kind: attack, name: pgd, params: {steps: 3}, levels: [0.1]}
slices:
  - {by: label}
metrics: [accuracy, attack_success_rate, mean_queries, failure_rate, error_rate, median_distance]
"""
NAMES = ["accuracy", "attack_success_rate", "mean_queries", "failure_rate", "error_rate",
         "median_distance"]  # fmt: skip


per_group_summarize = summarize_per_group  # the reference: the per-group loop


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = Store(tmp_path_factory.mktemp("speed") / "runs.db")
    run_id = run_suite(Suite.from_yaml(SUITE), store, progress=False)
    return {"store": store, "id": run_id, "df": store.records(run_id)}


def test_store_records_equal_the_frame_of_the_raw_records(run: dict[str, Any]) -> None:
    """The read path parses each distinct extra/meta text once: same columns, dtypes, values."""
    raw = run["store"].records(run["id"], expand=False)
    fast = run["df"]
    assert {"x.queries", "x.success", "x.clean_correct", "m.label"} <= set(fast.columns)
    pd.testing.assert_frame_equal(fast, frame(raw), check_exact=True)


@pytest.mark.parametrize(
    "by",
    [
        ["model", "kind", "probe", "level"],
        ["kind", "probe"],
        ["model", "kind", "probe", "level", "m.label"],  # many small groups, distinct sizes
    ],
)
def test_summarize_equals_the_per_group_loop(run: dict[str, Any], by: list[str]) -> None:
    """Values, CIs, n and replicate spread equal the per-group loop's exactly (groups of at most
    EXACT_DRAWS_MAX_N examples: the exact index draws of ``bootstrap_ci``; the demo's are <= 1080)."""
    df = run["df"]
    new = summarize(df, NAMES, by=by)
    old = per_group_summarize(df, NAMES, by=by)
    assert len(new) == len(old) > 0 and (new["n"] <= EXACT_DRAWS_MAX_N).all()
    assert new["ci_lo"].notna().any() and new["replicate_std"].notna().any()
    pd.testing.assert_frame_equal(new, old, check_exact=True, check_dtype=False)


@pytest.mark.parametrize("by", [["model"], ["model", "replicate"]])
def test_summarize_large_groups(run: dict[str, Any], by: list[str]) -> None:
    """Groups above EXACT_DRAWS_MAX_N: everything but the CIs equals the loop exactly; the CIs
    (resample counts per distinct value) agree within Monte-Carlo error: a few hundredths of the
    interval's width, far below its width itself."""
    df = run["df"]
    new = summarize(df, NAMES, by=by)
    old = per_group_summarize(df, NAMES, by=by)
    assert (new["n"] > EXACT_DRAWS_MAX_N).all()
    ci = ["ci_lo", "ci_hi"]
    pd.testing.assert_frame_equal(
        new.drop(columns=ci), old.drop(columns=ci), check_exact=True, check_dtype=False
    )
    width = (old["ci_hi"] - old["ci_lo"]).to_numpy()
    for c in ci:
        diff = (new[c] - old[c]).abs().to_numpy()
        assert np.array_equal(np.isnan(diff), np.isnan(width))
        ok = ~np.isnan(diff)
        assert ok.any() and (diff[ok] <= 0.15 * width[ok] + 1e-12).all(), (c, diff, width)
    assert summarize(df, NAMES, by=by).equals(new)  # deterministic per seed


def test_summarize_falls_back_for_other_metrics(run: dict[str, Any]) -> None:
    """A metric without a fast path (text metric on vision records: NaN) goes through the frame
    slices and still equals the loop, NaN included; an empty frame keeps the columns."""
    df = run["df"]
    names = ["queries_per_success", "accuracy"]
    new = summarize(df, names, by=["model", "probe"])
    pd.testing.assert_frame_equal(
        new, per_group_summarize(df, names, by=["model", "probe"]), check_exact=True,
        check_dtype=False,
    )  # fmt: skip
    empty = summarize(df.iloc[:0], ["accuracy"])
    assert empty.empty and list(empty.columns) == list(per_group_summarize(df.iloc[:0]).columns)


def test_report_content_unchanged(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole report (every table, CI and section) equals the one built as before: each table
    summarized on its own, by the per-group loop (not selected from one shared pass)."""
    new = build_report(run["store"], run["id"])
    monkeypatch.setattr(tables, "summarize", per_group_summarize)
    monkeypatch.setattr(tables, "summary_by_kind", lambda df, names: None)
    old = build_report(run["store"], run["id"])
    assert new["sections"]["slices"]["rows"] and new["summary"]["adversarial"]
    assert new == old


def test_bootstrap_cis_exact_per_sample() -> None:
    """Samples up to EXACT_DRAWS_MAX_N: the CI of ``bootstrap_ci`` for each, bit for bit, for 0/1,
    integer and fractional values, NaNs dropped, equal and distinct lengths, empty samples."""
    rng = np.random.default_rng(5)
    samples = [
        rng.integers(0, 2, 360).astype(float),
        rng.integers(0, 2, 360).astype(float),  # same length: shares the index matrix
        rng.integers(0, 40, 123).astype(float),  # counts (queries)
        rng.random(360),  # scores in [0, 1]: the gather path
        np.where(rng.random(500) < 0.1, np.nan, rng.random(500)),
        np.array([np.nan, np.nan]),
        np.array([]),
        rng.integers(0, 2, EXACT_DRAWS_MAX_N).astype(float),
    ]
    got = bootstrap_cis(samples, n_boot=500, seed=3)
    want = [bootstrap_ci(s, n_boot=500, seed=3) for s in samples]
    np.testing.assert_array_equal(np.array(got), np.array(want))


@pytest.mark.parametrize("kind", ["binary", "counts"])
def test_bootstrap_cis_large_samples_within_monte_carlo_error(kind: str) -> None:
    """Above EXACT_DRAWS_MAX_N, few-valued samples draw the resample counts of each distinct value
    (the same bootstrap distribution): the CI is deterministic per seed and agrees with the index
    bootstrap within Monte-Carlo error (a few resample-mean standard deviations / sqrt(n_boot))."""
    rng = np.random.default_rng(11)
    n = 30_000
    v = rng.random(n) < 0.7 if kind == "binary" else rng.integers(1, 101, n)
    v = v.astype(float)
    (lo, hi), (lo2, hi2) = bootstrap_cis([v, v.copy()], seed=0)
    assert (lo, hi) == (lo2, hi2) == bootstrap_cis([v], seed=0)[0]
    assert bootstrap_cis([v], seed=1)[0] != (lo, hi)
    ref_lo, ref_hi = bootstrap_ci(v, seed=0)
    se = v.std() / np.sqrt(n)  # sd of the resample means
    assert abs(lo - ref_lo) < 0.5 * se and abs(hi - ref_hi) < 0.5 * se
    assert lo < v.mean() < hi and abs((hi - lo) - 2 * 1.96 * se) < 0.1 * se
