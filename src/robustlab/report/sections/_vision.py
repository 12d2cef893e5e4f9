"""Shared helpers of the vision-analysis report sections (mCE, power law, logit margins,
effective robustness, certified vs empirical, ensemble breakdown): suite order of models and
probes, the stored probe specs, and plain-JSON conversion. No section is registered here."""

from __future__ import annotations

from typing import Any

import pandas as pd


def model_order(info: dict[str, Any], df: pd.DataFrame) -> list[str]:
    """Model labels in suite order, then any others found in the records (sorted)."""
    suite = info.get("suite") or {}
    order = [str(m.get("label") or m.get("name")) for m in suite.get("models") or []]
    found = sorted(set(map(str, df["model"].dropna().unique())) - set(order)) if len(df) else []
    return [m for m in order if len(df) and (df["model"] == m).any()] + found


def probe_specs(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Probe display label (as in the records) -> its stored spec (kind, name, params, norm)."""
    from robustlab.report.levels import _label

    specs = [p for p in ((info.get("suite") or {}).get("probes") or []) if isinstance(p, dict)]
    return {str(label): p for p in specs if (label := _label(p))}


def accuracy(df: pd.DataFrame) -> float:
    """Mean correctness; failed examples (``correct`` NaN) count as wrong."""
    return float(df["correct"].fillna(0.0).astype(float).mean()) if len(df) else float("nan")


def plain(value: Any) -> Any:
    """Plain JSON values (numpy scalars -> Python, NaN -> None), recursively."""
    from robustlab.report.build import _clean_json

    return _clean_json(value)
