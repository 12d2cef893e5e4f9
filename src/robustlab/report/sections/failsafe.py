"""FailSafeQA section (S37): Robustness, Context Grounding and Compliance per model, and the share of
good answers (judge rating >= 4) per query/context failure.

Built from records that carry a judge rating (``x.rating``, written by the ``rag`` task with a
FailSafeQA judge; see :mod:`robustlab.metrics.failsafe`): a grouped bar plot of the share of good
answers per probe and model, the per-probe table, and the three scores of the paper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.metrics.failsafe import failsafe_scores
from robustlab.report.format import e, num, pct, table


def _bars(rows: list[dict[str, Any]]) -> str:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from robustlab.report.plots import _RC, _svg

    probes = list(dict.fromkeys(r["probe"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / max(1, len(models))
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(7.0, 0.3 * len(probes) * len(models) + 1.4), layout="constrained")
        ax = fig.subplots()
        y = np.arange(len(probes))
        for j, m in enumerate(models):
            good = {r["probe"]: r["good"] for r in rows if r["model"] == m}
            ax.barh(y + j * width, [good.get(p, np.nan) for p in probes], width, label=m)
        ax.set_yticks(y + width * (len(models) - 1) / 2, probes)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of answers rated >= 4 by the judge")
        ax.legend(loc="lower right")
        return _svg(fig)


@report_sections.register("failsafe")
class FailSafeSection:
    """FailSafeQA robustness and context grounding (S37)."""

    title = "FailSafeQA: robustness, context grounding, compliance (S37)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if "x.rating" not in df or df["x.rating"].notna().sum() == 0:
            return None
        scores = failsafe_scores(df)
        rated = df[df["x.rating"].notna() & df["kind"].isin(["clean", "perturbation"])]
        good = (rated["x.rating"].astype(float) >= 4).astype(float)
        per = good.groupby([rated["model"], rated["probe"]]).agg(["mean", "size"]).reset_index()
        rows = [
            {"model": r.model, "probe": r.probe, "good": float(r.mean), "n": int(r.size)}
            for r in per.itertuples()
        ]
        return {
            "scores": scores.replace({np.nan: None}).to_dict("records"),
            "rows": rows,
        }

    def render(self, data: dict[str, Any]) -> str:
        scores = [
            [e(r["model"]), pct(r["robustness"]), pct(r["context_grounding"]),
             num(r["compliance"]), str(r["n_examples"])]
            for r in data["scores"]
        ]  # fmt: skip
        per = [[e(r["model"]), e(r["probe"]), pct(r["good"]), str(r["n"])] for r in data["rows"]]
        return "\n".join(
            [
                "<p>Robustness: share of answerable questions answered well (rating &ge; 4) under "
                "every query failure; Context Grounding: share of questions whose context is "
                "missing or irrelevant that were refused; Compliance: their weighted harmonic "
                "mean (&beta; = 0.5).</p>",
                table(
                    ("model", "Robustness", "Context Grounding", "Compliance", "examples"),
                    scores,
                    range(1, 5),
                ),
                _bars(data["rows"]),
                table(("model", "probe", "good answers", "n"), per, range(2, 4)),
            ]
        )
