"""Report section: two-stage robust optimization, Neur2RO against exact CCG (S24).

From the clean records of the ``robust-optimization`` task: per model (value network), the number of
instances solved (and failed: infeasible instances), the mean / max relative gap of Neur2RO's
first-stage decision evaluated exactly against CCG's optimum, the share within the probe's
tolerance, how often both chose the same decision, and the mean wall time of each method with
their ratio (Neur2RO / CCG; below 1 means Neur2RO is faster).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, pct, table


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for (model, probe), g in df.groupby(["model", "probe"], sort=True):
        ok = g[pd.to_numeric(g["x.gap"], errors="coerce").notna()] if "x.gap" in g else g.iloc[:0]
        if ok.empty:
            continue
        gap = pd.to_numeric(ok["x.gap"])
        t_ccg = float(pd.to_numeric(ok["x.seconds_ccg"]).mean())
        t_n2r = float(pd.to_numeric(ok["x.seconds_neur2ro"]).mean())
        out.append({
            "model": str(model), "probe": str(probe), "n": len(ok), "failed": len(g) - len(ok),
            "mean_gap": float(gap.mean()), "max_gap": float(gap.max()),
            "within": float(pd.to_numeric(ok["correct"]).mean()),
            "same": float(ok["x.same_decision"].astype(bool).mean()),
            "seconds_ccg": t_ccg, "seconds_neur2ro": t_n2r,
            "ratio": t_n2r / t_ccg if t_ccg > 0 else float("nan"),
        })  # fmt: skip
    return out


@report_sections.register("robust_opt")
class RobustOpt:
    """Neur2RO's gap and time against exact column-and-constraint generation."""

    title = "Robust optimization: Neur2RO vs exact CCG"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "x.seconds_neur2ro" not in df or "kind" not in df:
            return None
        rows = _rows(df[df["kind"] == "clean"])
        return {"rows": rows} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        body = [
            [e(r["model"]), e(r["probe"]), str(r["n"]), str(r["failed"]), pct(r["mean_gap"]),
             pct(r["max_gap"]), pct(r["within"]), pct(r["same"]), f"{r['seconds_ccg']:.2f}",
             f"{r['seconds_neur2ro']:.2f}", f"{r['ratio']:.2f}x"]
            for r in data["rows"]
        ]  # fmt: skip
        head = ["model", "probe", "instances", "failed", "mean gap", "max gap", "within tol.",
                "same x", "CCG s", "Neur2RO s", "time ratio"]  # fmt: skip
        note = (
            "<p>Gap: Neur2RO's first-stage decision evaluated exactly, relative to CCG's robust "
            "optimum (0 = optimal). Times are wall seconds per instance of each solve loop "
            "(network training excluded); the ratio is Neur2RO / CCG.</p>"
        )
        return note + table(head, body, num_cols=[2, 3, 4, 5, 6, 7, 8, 9, 10])
