"""ReCode section (S2): pass@1 nominal vs Robust Pass_s@1, Drop and Relative per transformation/family.

Built from ``code-generation`` records only (:func:`robustlab.metrics.code.recode_table`): a bar plot
of nominal pass@1 and Robust Pass_s@1 per family and per transformation, the tables, the execution
outcomes (passed / failed / timeout / empty completion) and the transformations' skip notes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.metrics.code import recode_table
from robustlab.report.format import e, num, pct, table

COLS = ("pass@k", "robust_pass@k", "robust_drop@k", "robust_relative@k")


def _bars(rows: list[dict[str, Any]], title: str) -> str:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from robustlab.report.plots import _RC, _svg

    with mpl.rc_context(_RC):
        fig = Figure(figsize=(7.0, 0.35 * len(rows) + 1.2), layout="constrained")
        ax = fig.subplots()
        y = np.arange(len(rows))
        ax.barh(y - 0.2, [r["pass@k"] for r in rows], 0.4, label="pass@1 (nominal)")
        ax.barh(y + 0.2, [r["robust_pass@k"] for r in rows], 0.4, label="Robust Pass_s@1")
        ax.set_yticks(y, [f"{r['model']}: {r['name']}" for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(title)
        ax.legend(loc="lower right")
        return _svg(fig)


@report_sections.register("code")
class CodeSection:
    """Code generation robustness (ReCode metrics)."""

    title = "Code generation robustness (ReCode)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        t = recode_table(df, k=1)
        if t.empty:
            return None
        t = t.replace({np.nan: None})
        status = {}
        if "x.status" in df:
            s = df[df["kind"].isin(["clean", "perturbation"])]["x.status"].fillna("error")
            status = {str(k): int(v) for k, v in s.value_counts().items()}
        skipped = {}
        if "x.skipped" in df:
            sk = df.dropna(subset=["x.skipped"])
            skipped = {str(k): int(v) for k, v in sk["probe"].value_counts().items()}
        return {"rows": t.to_dict("records"), "status": status, "skipped": skipped}

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]
        fam = [r for r in rows if r["group"] == "family"]
        tr = [r for r in rows if r["group"] == "transformation"]
        head = (
            "model",
            "name",
            "family",
            "pass@1",
            "Robust Pass_s@1",
            "Robust Drop_s@1",
            "Robust Relative_s@1",
            "s",
            "problems",
        )

        def body(rs: list[dict[str, Any]]) -> list[list[str]]:
            return [
                [
                    e(r["model"]),
                    e(r["name"]),
                    e(r["family"]),
                    pct(r["pass@k"]),
                    pct(r["robust_pass@k"]),
                    num(r["robust_drop@k"]),
                    pct(r["robust_relative@k"]),
                    str(r["variants"]),
                    str(r["problems"]),
                ]
                for r in rs
            ]

        parts = [
            _bars(fam, "per family (worst case over its transformations)") if fam else "",
            table(head, body(fam), range(3, 9)),
            _bars(tr, "per transformation"),
            table(head, body(tr), range(3, 9)),
        ]
        if data["status"]:
            parts.append(
                "<p>Execution outcomes: "
                + ", ".join(f"{e(k)}: {v}" for k, v in sorted(data["status"].items()))
                + "</p>"
            )
        if data["skipped"]:
            parts.append(
                "<p>Examples a transformation did not apply to (prompt kept): "
                + ", ".join(f"{e(k)}: {v}" for k, v in sorted(data["skipped"].items()))
                + "</p>"
            )
        return "\n".join(parts)
