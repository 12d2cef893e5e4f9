"""The tidy record format every work unit emits: one row per (example, probe, level).

Columns (all units, every task):

=============  =======================================================================
``model``      model label (suite name of the model)
``replicate``  training seed / replicate index of the model
``probe``      probe label (``clean`` for the unperturbed evaluation)
``kind``       ``clean`` | ``perturbation`` | ``attack`` | ``certifier`` | ``evalset``
``level``      severity, epsilon or radius of the probe (0 for clean)
``example_id`` stable id of the example in its data source
``label``      reference (JSON text: class id, answer, ...)
``pred``       prediction (JSON text)
``correct``    1.0 / 0.0 (or a score in [0, 1]); NaN where the model failed on the example
``error``      error message for this example, or None
``extra``      dict of probe-specific numbers (queries, distance, success, radius, set size, ...)
``meta``       dict of the example's metadata (slice columns)
=============  =======================================================================

Metrics and reports are computed from these records only, via :func:`frame`, which expands
``extra`` into ``x.<name>`` columns and ``meta`` into ``m.<name>`` columns.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

COLUMNS = (
    "model", "replicate", "probe", "kind", "level", "example_id",
    "label", "pred", "correct", "error", "extra", "meta",
)  # fmt: skip


def frame(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Records as a DataFrame with ``extra``/``meta`` dicts expanded to ``x.*``/``m.*`` columns."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    for col, prefix in (("extra", "x."), ("meta", "m.")):
        if col in df:
            expanded = _expand_json(df[col]).add_prefix(prefix)
            expanded.index = df.index
            df = pd.concat([df.drop(columns=[col]), expanded], axis=1)
    df["correct"] = pd.to_numeric(df["correct"], errors="coerce")
    df["level"] = pd.to_numeric(df["level"])
    return df


def without_diagnoses(df: pd.DataFrame) -> pd.DataFrame:
    """The records of evaluations (clean, perturbations, attacks, certifiers, evaluation sets,
    conformal), without those of ``diagnosis`` probes: a diagnosis's records hold scores of
    several sets (OOD examples, training examples, layer pairs) whose ``correct`` is not an
    accuracy, so accuracy tables leave them out and each diagnosis's report section reads them.
    Drift-monitor records (kind ``monitor``, :mod:`robustlab.monitor`) are left out likewise."""
    if df.empty or "kind" not in df:
        return df
    keep = ~df["kind"].isin(("diagnosis", "monitor"))
    return df if bool(keep.all()) else df[keep]


def dumps(value: Any) -> str:
    """JSON text for labels, predictions and dicts (stable key order)."""
    return json.dumps(value, sort_keys=True, default=_default)


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _expand_json(col: pd.Series) -> pd.DataFrame:
    """JSON objects (text, one per row) to columns, parsed in one vectorised call."""
    if all(isinstance(v, str) for v in col):
        if all(v == "{}" for v in col):
            return pd.DataFrame(index=range(len(col)))
        text = "\n".join(v if v else "{}" for v in col)
        return pd.read_json(io.StringIO(text), lines=True, dtype=False, precise_float=True)
    return pd.DataFrame([json.loads(v) if isinstance(v, str) else (v or {}) for v in col])
