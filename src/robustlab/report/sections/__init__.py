"""Domain report sections (ranking, certification, code generation, ...), one file each.

A section is registered in :data:`robustlab.core.registry.report_sections` and has::

    title: str                                        # heading in the report
    def build(self, df, info) -> dict | None: ...     # JSON-able data from the records, or None
    def render(self, data) -> str: ...                # HTML (inline SVG plots, no JavaScript)

``build`` gets the run's expanded records (:func:`robustlab.core.records.frame`) and
``Store.run_info``; it returns None when the run has nothing for this section (it is then omitted).
Use :mod:`robustlab.report.plots` / :mod:`robustlab.report.format` helpers for consistent looks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def diagnosis_probes(info: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Display label -> parameters of the run's ``diagnosis`` probes registered as ``name``
    (a diagnosis section's probes, read from the stored suite)."""
    out: dict[str, dict[str, Any]] = {}
    for p in (info.get("suite") or {}).get("probes") or []:
        if isinstance(p, dict) and p.get("kind") == "diagnosis" and p.get("name") == name:
            out[str(p.get("label") or p["name"])] = dict(p.get("params") or {})
    return out


def diagnosis_records(df: pd.DataFrame, info: dict[str, Any], name: str) -> pd.DataFrame:
    """The records of the run's ``diagnosis`` probes registered as ``name`` (empty if none)."""
    if df.empty or "kind" not in df or "probe" not in df:
        return df.iloc[:0]
    labels = list(diagnosis_probes(info, name))
    return df[(df["kind"] == "diagnosis") & df["probe"].astype(str).isin(labels)]
