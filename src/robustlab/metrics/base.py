"""Metrics: pure functions of records, each knowing whether higher is better.

A metric takes the records of one group (e.g. one model, probe and level) as a DataFrame in the
:func:`robustlab.core.records.frame` layout and returns a number (NaN when it does not apply).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Sliced = Callable[[int, int], tuple[float, Any]]  # (start, stop) -> (value, per-example values)


@dataclass(frozen=True)
class Metric:
    """A named function of records; ``per_example`` gives the values a bootstrap resamples."""

    name: str
    fn: Callable[[pd.DataFrame], float]
    higher_is_better: bool
    per_example: Callable[[pd.DataFrame], np.ndarray] | None = None
    doc: str = ""
    # Optional one-pass form for summaries over many groups: ``sliced(df)`` reads the ``columns``
    # of ``df`` once and returns ``(start, stop) -> (value, per-example values or None)`` giving,
    # bit for bit, ``self(g)`` and ``per_example(g)`` on ``g = df.iloc[start:stop]``.
    columns: tuple[str, ...] = ()
    sliced: Callable[[pd.DataFrame], Sliced] | None = None

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
    means = _boot_means(v, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _boot_means(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``v``, in chunks of at most ~4M indices (bounded memory)."""
    per = max(1, 4_000_000 // max(1, len(v)))
    out = [
        v[rng.integers(0, len(v), size=(min(per, n_boot - i), len(v)))].mean(axis=1)
        for i in range(0, n_boot, per)
    ]
    return np.concatenate(out)


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
        means = _boot_means(d, n_boot, rng)
        diff = float(d.mean())
    else:
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if not len(a) or not len(b):
            return float("nan"), float("nan"), float("nan")
        means = _boot_means(b, n_boot, rng) - _boot_means(a, n_boot, rng)
        diff = float(b.mean() - a.mean())
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return diff, float(lo), float(hi)
