"""Report section: certified accuracy vs radius per certifier.

Certifier records (``kind == "certifier"``) hold one row per (example, radius level); every row
carries the example's certified radius (``x.radius``) and abstention (``x.abstained``), so the full
curve ``certified accuracy(r) = mean(pred == label and not abstained and radius >= r)`` is drawn
from them at 41 radii, not only at the suite's levels; the table shows the suite's levels and
the mean Monte-Carlo samples per certificate (``x.samples``) when present.

Conformal records (``kind == "conformal"``) have their own section (``sections/conformal.py``).
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


@report_sections.register("certification_curves")
class CertificationCurves:
    """Certified accuracy vs L2 radius per certifier."""

    title = "Certification"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df:
            return None
        cert = df[df["kind"] == "certifier"]
        if cert.empty:
            return None
        return {"curves": _curves(cert)}

    def render(self, data: dict[str, Any]) -> str:
        parts = []
        if data["curves"]:
            parts.append(f"<figure>{_plot(data['curves'])}</figure>")
            body = [
                [c["model"], c["probe"], str(c["n"]), pct(c["abstain"]),
                 "; ".join(f"{lv:g}: {pct(a)}" for lv, a in zip(c["levels"], c["at_levels"], strict=True)),
                 num(c["samples"], 0) if c["samples"] is not None else "—"]
                for c in data["curves"]
            ]  # fmt: skip
            head = ["model", "certifier", "examples", "abstain", "certified acc. at radius",
                    "samples / cert."]  # fmt: skip
            parts.append(table(head, body, num_cols=[2, 3, 5]))
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
