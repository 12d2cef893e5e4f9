"""Report section: effective robustness, out-of-distribution vs in-distribution accuracy across
models (Taori et al., "Measuring Robustness to Natural Distribution Shifts in Image
Classification", NeurIPS 2020; S19/S25).

Across models, OOD accuracy tends to follow a linear trend in ID accuracy on the logit scale.
A model's *effective robustness* is how far its OOD accuracy lies above that trend, fitted over
the run's models (:func:`robustlab.metrics.vision.effective_robustness`, logit scale); relative
robustness is the plain drop ``(ID - OOD) / ID``. ID accuracy is clean accuracy on the suite's
data; each OOD condition is one evaluation set (``evalset`` probe) and, when the run has
perturbations, their mean accuracy over the (probe, level) pairs every model has
("perturbations (mean)"). Replicates are pooled.

Shown when three or more models have clean accuracy and an OOD condition: with two models the
line passes through both and every effective robustness is 0 by construction. Limits: a trend fitted
on a handful of models of one run is a rough baseline (Taori et al. fit it on ~200 models), so read
effective robustness as a ranking aid; accuracies of 0 or 1 are clipped to [1e-6, 1 - 1e-6]
before the logit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, pct, pp, table
from robustlab.report.sections._vision import accuracy, model_order, plain

MEAN_PERTURBATIONS = "perturbations (mean)"


def _conditions(df: pd.DataFrame, models: list[str]) -> dict[str, dict[str, float]]:
    """OOD condition -> model -> accuracy."""
    out: dict[str, dict[str, float]] = {}
    ev = df[(df["kind"] == "evalset") & df["model"].isin(models)]
    for probe, g in ev.groupby("probe", sort=False):
        out[str(probe)] = {str(m): accuracy(h) for m, h in g.groupby("model")}
    pert = df[(df["kind"] == "perturbation") & df["model"].isin(models)]
    if len(pert):
        pairs = pert.groupby(["probe", "level"])["model"].nunique()
        shared = pairs[pairs == len(models)].index
        if len(shared):
            keep = pert.set_index(["probe", "level"]).index.isin(shared)
            out[MEAN_PERTURBATIONS] = {str(m): accuracy(h) for m, h in pert[keep].groupby("model")}
    return out


@report_sections.register("effective_robustness")
class EffectiveRobustness:
    """ID vs OOD accuracy over the run's models with the fitted logit-linear trend (S19/S25)."""

    title = "Effective robustness (S19/S25)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        from robustlab.metrics.vision import effective_robustness

        if df.empty or "kind" not in df:
            return None
        clean = df[df["kind"] == "clean"]
        models = model_order(info, clean)
        if len(models) < 3:
            return None
        ident = {m: accuracy(clean[clean["model"] == m]) for m in models}
        panels = []
        for cond, ood in _conditions(df, models).items():
            ms = [m for m in models if m in ood]
            if len(ms) < 3:
                continue
            i, o = [ident[m] for m in ms], [ood[m] for m in ms]
            fit = effective_robustness(i, o, scale="logit")
            er, drop = fit["effective_robustness"], fit["relative_drop"]
            panels.append(
                {"condition": cond, "slope": fit["slope"], "intercept": fit["intercept"],
                 "rows": [{"model": m, "id": a, "ood": b, "effective_robustness": float(r),
                           "relative_drop": float(d)}
                          for m, a, b, r, d in zip(ms, i, o, er, drop, strict=True)]}
            )  # fmt: skip
        return plain({"panels": panels}) if panels else None

    def render(self, data: dict[str, Any]) -> str:
        panels = data["panels"]
        parts = [
            "<p>Each point is a model: in-distribution (clean) accuracy vs accuracy under the "
            "shift. The line is the linear fit over the run's models on the logit scale; "
            "effective robustness = OOD accuracy minus the line at the model's ID accuracy "
            "(Taori et al., 2020). The dotted diagonal is OOD = ID.</p>",
            f"<figure>{_plot(panels)}</figure>",
        ]
        for p in panels:
            body = [
                [e(r["model"]), pct(r["id"]), pct(r["ood"]), pp(r["effective_robustness"], True),
                 pct(r["relative_drop"])]
                for r in p["rows"]
            ]  # fmt: skip
            parts.append(
                f'<h3>{e(p["condition"])}</h3><p class="muted">logit(OOD) = '
                f"{p['slope']:.3f} &middot; logit(ID) {p['intercept']:+.3f}</p>"
            )
            head = ["model", "ID accuracy", "OOD accuracy", "effective robustness",
                    "relative drop"]  # fmt: skip
            parts.append(table(head, body, num_cols=range(1, 5)))
        return "\n".join(parts)


def _plot(panels: list[dict[str, Any]]) -> str:
    """Scatter of OOD vs ID accuracy per condition with the fitted logit-linear trend."""
    import matplotlib

    from robustlab.report import plots

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(panels), width=4.8, height=3.8, sharey=False)
        for ax, p in zip(axes, panels, strict=True):
            ids = np.array([r["id"] for r in p["rows"]])
            oods = np.array([r["ood"] for r in p["rows"]])
            lo, hi = max(0.0, ids.min() - 0.05), min(1.0, ids.max() + 0.05)
            grid = np.linspace(lo, hi, 64)
            trend = 1 / (1 + np.exp(-(p["slope"] * logit(grid) + p["intercept"])))
            ax.plot(grid, trend, color="#4a6a94", label="fitted trend (logit scale)")
            ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls=":", label="OOD = ID")
            for i, r in enumerate(p["rows"]):
                ax.plot(r["id"], r["ood"], ls="none", marker=plots._MARKERS[i % len(plots._MARKERS)],
                        ms=6, label=r["model"], clip_on=False, zorder=3)  # fmt: skip
            ax.set_xlim(lo - 0.01, hi + 0.01)
            ax.set_ylim(
                max(0.0, min(oods.min(), trend.min()) - 0.05),
                min(1.04, max(oods.max(), trend.max()) + 0.05),
            )
            ax.set_xlabel("ID accuracy (clean)")
            ax.set_ylabel(f"OOD accuracy: {p['condition']}")
            ax.set_title(p["condition"])
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle("Effective robustness: OOD vs ID accuracy across models")
        return plots._svg(fig)
