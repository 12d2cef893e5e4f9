"""Core metrics shared by every task: accuracy, failures, attack success, queries, distances."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric, Sliced


def _correct(df: pd.DataFrame) -> np.ndarray:
    # an example on which the model failed counts as not correct (worst case)
    return df["correct"].fillna(0.0).to_numpy(dtype=np.float64)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


def _mean_slices(v: np.ndarray) -> Sliced:
    """Sliced form of a metric that is the mean of the per-example values ``v``."""
    return lambda a, b: (float(v[a:b].mean()), v[a:b])


def _success_slices(df: pd.DataFrame) -> Sliced:
    s, base = _col(df, "x.success"), _col(df, "x.clean_correct")
    keep = ((base == 1) & s.notna()).to_numpy()
    kept = np.cumsum(np.concatenate([[0], keep]))
    vals = s[keep].astype(float).to_numpy()

    def asr(a: int, b: int) -> tuple[float, np.ndarray]:
        v = vals[kept[a] : kept[b]]
        return (float(v.mean()) if len(v) else float("nan")), v

    return asr


def _one_minus(c: np.ndarray) -> Sliced:
    return lambda a, b: (float(1.0 - c[a:b].mean()), 1.0 - c[a:b])


def _failure_slices(df: pd.DataFrame) -> Sliced:
    f = df["error"].notna().to_numpy()
    ff = f.astype(np.float64)
    return lambda a, b: (float(f[a:b].mean()), ff[a:b])


def _queries_slices(df: pd.DataFrame) -> Sliced:
    q = _col(df, "x.queries")
    qv = q.to_numpy(dtype=np.float64)
    return lambda a, b: (float(q.iloc[a:b].mean()), qv[a:b])


def _distance_slices(df: pd.DataFrame) -> Sliced:
    dist, won = _col(df, "x.distance"), _col(df, "x.success") == 1
    return lambda a, b: (float(dist.iloc[a:b][won.iloc[a:b]].median()), None)


def _success_on_correct(df: pd.DataFrame) -> np.ndarray:
    s = _col(df, "x.success")
    base = _col(df, "x.clean_correct")
    keep = (base == 1) & s.notna()
    return s[keep].astype(float).to_numpy()


accuracy = metrics.register("accuracy")(
    Metric(
        "accuracy",
        lambda df: _correct(df).mean(),
        higher_is_better=True,
        per_example=_correct,
        doc="Mean correctness (score in [0, 1] per example); failed examples count as wrong.",
        columns=("correct",),
        sliced=lambda df: _mean_slices(_correct(df)),
    )
)

error_rate = metrics.register("error_rate")(
    Metric(
        "error_rate",
        lambda df: 1.0 - _correct(df).mean(),
        higher_is_better=False,
        per_example=lambda df: 1.0 - _correct(df),
        doc="1 - accuracy.",
        columns=("correct",),
        sliced=lambda df: _one_minus(_correct(df)),
    )
)

failure_rate = metrics.register("failure_rate")(
    Metric(
        "failure_rate",
        lambda df: df["error"].notna().mean(),
        higher_is_better=False,
        per_example=lambda df: df["error"].notna().to_numpy(dtype=np.float64),
        doc="Share of examples on which the model raised or returned non-finite output.",
        columns=("error",),
        sliced=_failure_slices,
    )
)

attack_success_rate = metrics.register("attack_success_rate")(
    Metric(
        "attack_success_rate",
        lambda df: _success_on_correct(df).mean() if len(_success_on_correct(df)) else np.nan,
        higher_is_better=False,
        per_example=_success_on_correct,
        doc="Share of clean-correct examples the attack fooled (attack records only).",
        columns=("x.success", "x.clean_correct"),
        sliced=_success_slices,
    )
)

mean_queries = metrics.register("mean_queries")(
    Metric(
        "mean_queries",
        lambda df: _col(df, "x.queries").mean(),
        higher_is_better=True,  # the model's view, like attack_success_rate: costlier attacks
        per_example=lambda df: _col(df, "x.queries").to_numpy(dtype=np.float64),
        doc="Mean model queries (forward or gradient evaluations) an attack spent per example "
        "(higher: the model is costlier to attack).",
        columns=("x.queries",),
        sliced=_queries_slices,
    )
)

median_distance = metrics.register("median_distance")(
    Metric(
        "median_distance",
        lambda df: _col(df, "x.distance")[_col(df, "x.success") == 1].median(),
        higher_is_better=True,
        doc="Median Lp distance of successful adversarial examples to their clean inputs.",
        columns=("x.distance", "x.success"),
        sliced=_distance_slices,
    )
)
