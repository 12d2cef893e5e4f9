"""pass@k and ReCode's robust metrics against hand-computed values and an exact enumeration."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pandas as pd
import pytest

from robustlab.code.passk import (
    pass_at_k,
    robust_drop_at_k,
    robust_pass_at_k,
    robust_relative_at_k,
    worst_case_counts,
)
from robustlab.core.errors import ConfigError
from robustlab.metrics.code import recode_table


def test_pass_at_k_hand_values() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))  # 0.7
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ConfigError):
        pass_at_k(2, 3, 1)
    with pytest.raises(ConfigError):
        pass_at_k(2, 1, 3)


def test_pass_at_k_is_the_exact_subset_probability() -> None:
    """Unbiased estimator = P(some of k samples drawn without replacement passes), enumerated."""
    for n, c, k in [(6, 2, 3), (7, 1, 2), (5, 4, 1)]:
        pool = [1] * c + [0] * (n - c)
        subsets = list(itertools.combinations(range(n), k))
        exact = sum(any(pool[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(exact)


def test_robust_metrics_hand_computed() -> None:
    # 3 problems x 2 variants, greedy
    passed = [[True, True], [True, False], [False, False]]
    assert robust_pass_at_k(passed, 1) == pytest.approx(1 / 3)
    assert robust_drop_at_k(2 / 3, 1 / 3) == pytest.approx(0.5)
    # nominal: P0 pass, P1 pass, P2 fail; variants of P2: one passes -> RC+ = 1; P1 -> RC- = 1
    rel = robust_relative_at_k([True, True, False], [[True, True], [True, False], [False, True]])
    assert rel == pytest.approx(2 / 3)
    # sampling: problem with n=3, slot-wise worst case over 2 variants
    arr = np.array([[[1, 1, 0], [1, 0, 1]]], dtype=bool)
    assert worst_case_counts(arr).tolist() == [1]
    assert robust_pass_at_k(arr, 2) == pytest.approx(pass_at_k(3, 1, 2))
    assert np.isnan(robust_drop_at_k(0.0, 0.0))


def test_recode_table_from_records() -> None:
    rows = []
    for ex, nom in enumerate([1, 1, 0]):
        rows.append(
            {
                "model": "m",
                "kind": "clean",
                "probe": "clean",
                "level": 0.0,
                "example_id": ex,
                "x.n": 1,
                "x.passes": nom,
                "x.family": "nominal",
            }
        )
    var = {("t1", 1): [1, 0, 0], ("t1", 2): [1, 1, 1], ("t2", 1): [1, 1, 0]}
    for (probe, lvl), vals in var.items():
        for ex, v in enumerate(vals):
            rows.append(
                {
                    "model": "m",
                    "kind": "perturbation",
                    "probe": probe,
                    "level": float(lvl),
                    "example_id": ex,
                    "x.n": 1,
                    "x.passes": v,
                    "x.family": "docstring",
                }
            )
    t = recode_table(pd.DataFrame(rows)).set_index("name")
    assert t.loc["t1", "pass@k"] == pytest.approx(2 / 3)
    assert t.loc["t1", "robust_pass@k"] == pytest.approx(1 / 3)
    assert t.loc["t1", "robust_drop@k"] == pytest.approx(0.5)
    assert t.loc["t1", "robust_relative@k"] == pytest.approx(2 / 3)
    assert t.loc["t2", "robust_pass@k"] == pytest.approx(2 / 3)
    assert t.loc["docstring", "robust_pass@k"] == pytest.approx(1 / 3)  # worst over t1 and t2
    assert t.loc["docstring", "variants"] == 3


def _records(nominal: list[str], variants: dict[tuple[str, int], list[str]]) -> pd.DataFrame:
    """Code records with per-sample masks: ``nominal[i]`` / ``variants[(probe, level)][i]``."""
    rows = []

    def row(kind: str, probe: str, lvl: float, ex: int, m: str) -> dict:
        return {"model": "m", "kind": kind, "probe": probe, "level": lvl, "example_id": ex,
                "x.n": len(m), "x.passes": m.count("1"), "x.pass_mask": m,
                "x.family": "nominal" if kind == "clean" else "docstring"}  # fmt: skip

    rows += [row("clean", "clean", 0.0, ex, m) for ex, m in enumerate(nominal)]
    for (probe, lvl), masks in variants.items():
        rows += [row("perturbation", probe, float(lvl), ex, m) for ex, m in enumerate(masks)]
    return pd.DataFrame(rows)


def test_robust_pass_with_samples_takes_the_worst_case_per_sample() -> None:
    """The audit's case: n = 10, three variants passing 8, 9 and 7 samples.

    Robust Pass_s@1 was 0.0 (all-or-nothing) while Robust Pass_s@2 was 0.933 (fewest passes, not
    per sample). Per sample: variant 1 fails samples {0, 1}, variant 2 {0}, variant 3 {0, 1, 2}, so
    samples 3..9 pass everywhere: rc = 7, Robust Pass@1 = 0.7, Robust Pass@2 = 1 - C(3,2)/C(10,2).
    """
    fail = lambda idx: "".join("0" if i in idx else "1" for i in range(10))  # noqa: E731
    v = {("t", 1): [fail({0, 1})], ("t", 2): [fail({0})], ("t", 3): [fail({0, 1, 2})]}
    df = _records(["1" * 10], v)
    t1 = recode_table(df, k=1).set_index("name").loc["t"]
    assert t1["robust_pass@k"] == pytest.approx(0.7)
    assert t1["robust_drop@k"] == pytest.approx(0.3)
    t2 = recode_table(df, k=2).set_index("name").loc["t"]
    assert t2["robust_pass@k"] == pytest.approx(1 - comb(3, 2) / comb(10, 2))
    # disjoint failures: samples {0,1}, {2}, {3,4,5} fail -> rc = 4
    v = {("t", 1): [fail({0, 1})], ("t", 2): [fail({2})], ("t", 3): [fail({3, 4, 5})]}
    t = recode_table(_records(["1" * 10], v), k=1).set_index("name").loc["t"]
    assert t["robust_pass@k"] == pytest.approx(0.4)
    assert t["robust_relative@k"] == pytest.approx(0.6)  # 6 samples flip 1 -> 0
    # the same from the pure function over [problems, variants, samples]
    arr = np.array([[[c == "1" for c in fail(s)] for s in ({0, 1}, {2}, {3, 4, 5})]])
    assert robust_pass_at_k(arr, 1) == pytest.approx(0.4)
    assert robust_pass_at_k(arr, 3) == pytest.approx(1 - comb(6, 3) / comb(10, 3))


def test_robust_relative_paper_and_released_definitions_hand_computed() -> None:
    # n = 4, s = 2: nominal 1100, variants 1010 and 1001 -> all-pass 1000, any-pass 1011
    nom = [[1, 1, 0, 0]]
    var = [[[1, 0, 1, 0], [1, 0, 0, 1]]]
    # paper: rc- = #(nominal & not all) = 1 (sample 1); rc+ = #(not nominal & any) = 2 (samples 2, 3)
    assert robust_relative_at_k(nom, var, 1) == pytest.approx(1 / 4 + 2 / 4)
    # released code: #(nominal != all-pass) = 1 (sample 1)
    assert robust_relative_at_k(nom, var, 1, "released") == pytest.approx(1 / 4)
    assert robust_relative_at_k(nom, var, 2, "released") == pytest.approx(pass_at_k(4, 1, 2))
    # greedy: problem 0 fails nominally, passes one of two variants; problem 1 fails, passes both
    g_nom, g_var = [False, False], [[True, False], [True, True]]
    assert robust_relative_at_k(g_nom, g_var) == pytest.approx(1.0)  # both flip on some variant
    assert robust_relative_at_k(g_nom, g_var, definition="released") == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="paper"):
        robust_relative_at_k(g_nom, g_var, definition="official")
    t = recode_table(_records(["1100"], {("t", 1): ["1010"], ("t", 2): ["1001"]})).iloc[0]
    assert t["robust_pass@k"] == pytest.approx(0.25) and t["pass@k"] == pytest.approx(0.5)
    assert t["robust_relative@k"] == pytest.approx(0.75)
    assert t["robust_relative_released@k"] == pytest.approx(0.25)


def test_records_without_sample_masks_are_not_guessed() -> None:
    """n > 1 without per-sample outcomes (0 < passes < n): robust metrics NaN, pass@k still exact;
    all-pass / all-fail records are known without a mask."""
    df = _records(["1" * 4, "0" * 4], {("t", 1): ["1100", "0000"], ("t", 2): ["1111", "0000"]})
    old = df.drop(columns="x.pass_mask")
    t = recode_table(old).iloc[0]
    assert t["pass@k"] == pytest.approx(0.5) and np.isnan(t["robust_pass@k"])
    ok = old[~((old.probe == "t") & (old.level == 1.0) & (old.example_id == 0))]
    t = recode_table(ok).iloc[0]  # the variant left out of problem 0 counts as failed
    assert t["robust_pass@k"] == 0.0 and t["variants"] == 2
