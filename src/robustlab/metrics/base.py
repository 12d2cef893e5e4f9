"""Metrics: pure functions of records, each knowing whether higher is better.

A metric takes the records of one group (e.g. one model, probe and level) as a DataFrame in the
:func:`robustlab.core.records.frame` layout and returns a number (NaN when it does not apply).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Metric:
    """A named function of records; ``per_example`` gives the values a bootstrap resamples."""

    name: str
    fn: Callable[[pd.DataFrame], float]
    higher_is_better: bool
    per_example: Callable[[pd.DataFrame], np.ndarray] | None = None
    doc: str = ""

    def __call__(self, df: pd.DataFrame) -> float:
        return float(self.fn(df)) if len(df) else float("nan")


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaNs dropped), vectorised."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap_diff(
    a: np.ndarray,
    b: np.ndarray,
    paired: bool = True,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``b - a`` and its percentile bootstrap CI.

    ``paired``: ``a[i]`` and ``b[i]`` belong to the same example (resampled jointly); otherwise the
    two samples are resampled independently.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if paired:
        d = b - a
        d = d[~np.isnan(d)]
        if len(d) == 0:
            return float("nan"), float("nan"), float("nan")
        means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
        diff = float(d.mean())
    else:
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if not len(a) or not len(b):
            return float("nan"), float("nan"), float("nan")
        ma = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
        mb = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
        means = mb - ma
        diff = float(b.mean() - a.mean())
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return diff, float(lo), float(hi)
