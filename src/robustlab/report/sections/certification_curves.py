"""Report section: certified accuracy vs radius per certifier, and conformal coverage / set size.

Certifier records (``kind == "certifier"``) hold one row per (example, radius level); every row
carries the example's certified radius (``x.radius``) and abstention (``x.abstained``), so the full
curve ``certified accuracy(r) = mean(pred == label and not abstained and radius >= r)`` is drawn
from them at 41 radii, not only at the suite's levels; the table shows the suite's levels and
the mean Monte-Carlo samples per certificate (``x.samples``) when present.

Conformal records (``kind == "conformal"``: ``level`` = attack epsilon, 0 = clean; ``correct`` =
label covered; ``x.set_size``) give a coverage / mean set size table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import num, pct, table

GRID = 41


def _curves(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for (model, probe), g in df.groupby(["model", "probe"], sort=False):
        one = g[g["level"] == g["level"].min()].drop_duplicates(["replicate", "example_id"])
        radius = pd.to_numeric(one.get("x.radius", pd.Series(0.0, index=one.index)))
        abst = pd.to_numeric(one.get("x.abstained", pd.Series(0, index=one.index))).astype(bool)
        hit = (one["pred"].astype(str) == one["label"].astype(str)) & ~abst
        r_max = float(radius.max()) if len(radius) else 0.0
        grid = np.linspace(0.0, max(r_max, 1e-9) * 1.05, GRID)
        acc = [float((hit & (radius >= r)).mean()) for r in grid]
        levels = sorted(g["level"].unique())
        at = [float(g[g["level"] == lv]["correct"].mean()) for lv in levels]
        samples = pd.to_numeric(one["x.samples"]).mean() if "x.samples" in one else None
        out.append(
            {
                "model": str(model), "probe": str(probe), "n": int(len(one)),
                "grid": grid.tolist(), "acc": acc, "levels": [float(v) for v in levels],
                "at_levels": at, "abstain": float(abst.mean()),
                "samples": None if samples is None or pd.isna(samples) else float(samples),
            }
        )  # fmt: skip
    return out


def _conformal(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for (model, probe, level), g in df.groupby(["model", "probe", "level"], sort=True):
        size = pd.to_numeric(g["x.set_size"]).mean() if "x.set_size" in g else float("nan")
        rows.append(
            {"model": str(model), "probe": str(probe), "level": float(level),
             "coverage": float(g["correct"].mean()), "set_size": float(size), "n": int(len(g))}
        )  # fmt: skip
    return rows


@report_sections.register("certification_curves")
class CertificationCurves:
    """Certified accuracy vs L2 radius per certifier; conformal coverage and set size."""

    title = "Certification"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df:
            return None
        cert, conf = df[df["kind"] == "certifier"], df[df["kind"] == "conformal"]
        if cert.empty and conf.empty:
            return None
        return {"curves": _curves(cert) if len(cert) else [], "conformal": _conformal(conf)}

    def render(self, data: dict[str, Any]) -> str:
        parts = []
        if data["curves"]:
            parts.append(_plot(data["curves"]))
            body = [
                [c["model"], c["probe"], str(c["n"]), pct(c["abstain"]),
                 "; ".join(f"{lv:g}: {pct(a)}" for lv, a in zip(c["levels"], c["at_levels"], strict=True)),
                 num(c["samples"], 0) if c["samples"] is not None else "—"]
                for c in data["curves"]
            ]  # fmt: skip
            head = ["model", "certifier", "examples", "abstain", "certified acc. at radius",
                    "samples / cert."]  # fmt: skip
            parts.append(table(head, body, num_cols=[2, 3, 5]))
        if data["conformal"]:
            body = [
                [r["model"], r["probe"], num(r["level"]), pct(r["coverage"]), num(r["set_size"], 2)]
                for r in data["conformal"]
            ]
            head = ["model", "conformal", "attack eps", "coverage", "mean set size"]
            parts.append("<h3>Conformal prediction</h3>" + table(head, body, num_cols=[2, 3, 4]))
        return "\n".join(parts)


def _plot(curves: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        models = list(dict.fromkeys(c["model"] for c in curves))
        fig, axes = plots._figure(len(models))
        for ax, model in zip(axes, models, strict=True):
            for c in (c for c in curves if c["model"] == model):
                ax.plot(c["grid"], c["acc"], label=c["probe"])
            ax.set_title(model)
            ax.set_xlabel("L2 radius")
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("certified accuracy")
        fig.suptitle("Certified accuracy vs radius")
        return plots._svg(fig)
