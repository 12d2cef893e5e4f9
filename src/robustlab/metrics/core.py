"""Core metrics shared by every task: accuracy, failures, attack success, queries, distances."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric


def _correct(df: pd.DataFrame) -> np.ndarray:
    # an example on which the model failed counts as not correct (worst case)
    return df["correct"].fillna(0.0).to_numpy(dtype=np.float64)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


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
    )
)

error_rate = metrics.register("error_rate")(
    Metric(
        "error_rate",
        lambda df: 1.0 - _correct(df).mean(),
        higher_is_better=False,
        per_example=lambda df: 1.0 - _correct(df),
        doc="1 - accuracy.",
    )
)

failure_rate = metrics.register("failure_rate")(
    Metric(
        "failure_rate",
        lambda df: df["error"].notna().mean(),
        higher_is_better=False,
        per_example=lambda df: df["error"].notna().to_numpy(dtype=np.float64),
        doc="Share of examples on which the model raised or returned non-finite output.",
    )
)

attack_success_rate = metrics.register("attack_success_rate")(
    Metric(
        "attack_success_rate",
        lambda df: _success_on_correct(df).mean() if len(_success_on_correct(df)) else np.nan,
        higher_is_better=False,
        per_example=_success_on_correct,
        doc="Share of clean-correct examples the attack fooled (attack records only).",
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
    )
)

median_distance = metrics.register("median_distance")(
    Metric(
        "median_distance",
        lambda df: _col(df, "x.distance")[_col(df, "x.success") == 1].median(),
        higher_is_better=True,
        doc="Median Lp distance of successful adversarial examples to their clean inputs.",
    )
)
