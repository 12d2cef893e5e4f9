"""Text-attack metrics: cost and quality of the adversarial texts (records in the
:func:`robustlab.core.records.frame` layout; attack records carry ``x.success``, ``x.queries``,
``x.edit_rate``, ``x.clean_correct`` and the attack's extras such as ``x.similarity``).

Success rate and mean queries are the core metrics ``attack_success_rate`` / ``mean_queries``
(:mod:`robustlab.metrics.core`); this module adds the per-success views that TextAttack reports
(Morris et al., 2020), restricted to clean-correct examples as the success rate is:

* ``queries_per_success`` -- all queries spent on clean-correct examples / number fooled (the cost
  of one adversarial example; lower is better).
* ``queries_successful`` -- mean queries of the successful attacks.
* ``edit_rate_successful`` -- mean word edit rate of the successful adversarial texts.
* ``similarity_successful`` -- mean sentence-embedding similarity of the successful adversarial
  texts to their originals (MiniLM cosine; NaN when the attack did not measure it).

Example::

    df = frame(store.records(run_id))
    metrics.get("queries_per_success")(df[df.probe == "textfooler"])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(np.nan, df.index)


def attacked(df: pd.DataFrame) -> pd.DataFrame:
    """The records of clean-correct examples that the attack ran on (success known)."""
    return df[(_col(df, "x.clean_correct") == 1) & _col(df, "x.success").notna()]


def _successful(df: pd.DataFrame, col: str) -> np.ndarray:
    a = attacked(df)
    return _col(a, col)[_col(a, "x.success") == 1].to_numpy(dtype=np.float64)


def queries_per_success_value(df: pd.DataFrame) -> float:
    """Queries on clean-correct examples per successful attack (inf when nothing was fooled)."""
    a = attacked(df)
    wins = float((_col(a, "x.success") == 1).sum())
    if not len(a):
        return float("nan")
    total = float(_col(a, "x.queries").sum())
    return total / wins if wins else float("inf")


def _mean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


queries_per_success = metrics.register("queries_per_success")(
    Metric(
        "queries_per_success",
        queries_per_success_value,
        higher_is_better=True,
        doc="Model queries spent on clean-correct examples per successful attack (attacker's "
        "cost: higher means a more robust model).",
    )
)

queries_successful = metrics.register("queries_successful")(
    Metric(
        "queries_successful",
        lambda df: _mean(_successful(df, "x.queries")),
        higher_is_better=True,
        per_example=lambda df: _successful(df, "x.queries"),
        doc="Mean model queries of the successful attacks.",
    )
)

edit_rate_successful = metrics.register("edit_rate_successful")(
    Metric(
        "edit_rate_successful",
        lambda df: _mean(_successful(df, "x.edit_rate")),
        higher_is_better=True,
        per_example=lambda df: _successful(df, "x.edit_rate"),
        doc="Mean word edit rate (share of words changed) of the successful adversarial texts.",
    )
)

similarity_successful = metrics.register("similarity_successful")(
    Metric(
        "similarity_successful",
        lambda df: _mean(_successful(df, "x.similarity")),
        higher_is_better=False,
        per_example=lambda df: _successful(df, "x.similarity"),
        doc="Mean MiniLM cosine similarity of the successful adversarial texts to their originals "
        "(higher: the model is fooled by more meaning-preserving edits).",
    )
)

augmented_share = metrics.register("augmented_share")(
    Metric(
        "augmented_share",
        lambda df: _mean(_col(df, "x.augmented").to_numpy(dtype=np.float64)),
        higher_is_better=False,
        per_example=lambda df: _col(df, "x.augmented").to_numpy(dtype=np.float64),
        doc="Share of inputs a test-time-augmentation model (llm-tta) rewrote (its extra cost; "
        "entropy-selective TTA rewrites only uncertain inputs). NaN for other models.",
    )
)
