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
