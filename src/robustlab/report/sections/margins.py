"""Report section: logit-margin statistics, clean vs under attack (S34).

S34 (Cubuk et al.) ties adversarial error to the distribution of logit differences
``z_y - z_j``; the per-example margin ``z_y - max_{j != y} z_j`` is its smallest one: positive
for a correct prediction (by how much), negative for an error. Attack records of classification
runs carry the margin on the attacked input (``x.margin``) and on the clean input
(``x.clean_margin``), rounded to 4 decimals (:func:`robustlab.tasks.classification.logit_margins`).
Per model and attack level, the section shows mean, median, the 10/25/75/90% quantiles and the
share of negative margins, on the clean inputs and under attack, over the same examples
(replicates pooled; failed examples left out), and one plot per norm of the median margin (with
its 25-75% band) against the budget, the clean inputs at 0.

Limits: only the margin is stored, not every logit difference (S34's full distribution); margins
are in the model's output units (logits; probabilities for adapters that only return those), so
compare models with care; runs recorded before margins were stored have no such section.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, level, num, pct, table
from robustlab.report.sections._vision import model_order, plain

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def margin_stats(m: np.ndarray) -> dict[str, float]:
    """Mean, quantiles (q10, q25, median, q75, q90), share of negative margins and n."""
    q = np.quantile(m, QUANTILES) if len(m) else [float("nan")] * len(QUANTILES)
    out = {"mean": float(np.mean(m)) if len(m) else float("nan"), "n": int(len(m))}
    out |= dict(zip(("q10", "q25", "median", "q75", "q90"), map(float, q), strict=True))
    out["negative"] = float((m < 0).mean()) if len(m) else float("nan")
    return out


@report_sections.register("logit_margins")
class LogitMargins:
    """Logit margin ``z_y - max_{j != y} z_j`` clean vs attacked, per model and attack level."""

    title = "Logit margins (S34)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        from robustlab.report.levels import axis_for, probe_axes

        if df.empty or "kind" not in df or "x.margin" not in df or "x.clean_margin" not in df:
            return None
        att = df[(df["kind"] == "attack")]
        m = pd.to_numeric(att["x.margin"], errors="coerce")
        c = pd.to_numeric(att["x.clean_margin"], errors="coerce")
        att = att.assign(_m=m, _c=c)[m.notna() & c.notna()]
        if att.empty:
            return None
        axes = probe_axes(info)
        order = {mo: i for i, mo in enumerate(model_order(info, att))}
        probes = list(axes)
        rows = []
        for (model, probe, lv), g in att.groupby(["model", "probe", "level"], sort=True):
            axis = axis_for(axes, "attack", str(probe))
            rows.append(
                {"model": str(model), "probe": str(probe), "level": float(lv), "axis": axis.label,
                 "clean": margin_stats(g["_c"].to_numpy(float)),
                 "attacked": margin_stats(g["_m"].to_numpy(float))}
            )  # fmt: skip
        rows.sort(
            key=lambda r: (order.get(r["model"], len(order)),
                           probes.index(r["probe"]) if r["probe"] in probes else len(probes),
                           r["level"])
        )  # fmt: skip
        return plain({"rows": rows})

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]
        parts = [
            "<p>Margin = true-class logit minus the largest other logit (negative: "
            "misclassified), on the clean and on the attacked input of the same examples.</p>"
        ]
        for axis in dict.fromkeys(r["axis"] for r in rows):
            mine = [r for r in rows if r["axis"] == axis]
            parts.append(f"<h3>{e(axis)}</h3><figure>{_plot(mine, axis)}</figure>")
            body = []
            for key in dict.fromkeys((r["model"], r["probe"]) for r in mine):
                pr = [r for r in mine if (r["model"], r["probe"]) == key]
                shown = [("0 (clean)", pr[0]["clean"])]  # the same examples at every level
                shown += [(level(r["level"]), r["attacked"]) for r in pr]
                for lv, s in shown:
                    body.append(
                        [e(key[0]), e(key[1]), lv, num(s["mean"]), num(s["median"]),
                         f"{num(s['q10'])} / {num(s['q25'])}", f"{num(s['q75'])} / {num(s['q90'])}",
                         pct(s["negative"]), str(s["n"])]
                    )  # fmt: skip
            head = ["model", "attack", axis, "mean", "median", "q10 / q25", "q75 / q90",
                    "negative", "n"]  # fmt: skip
            parts.append(table(head, body, num_cols=range(2, 9)))
        return "\n".join(parts)


def _plot(rows: list[dict[str, Any]], axis: str) -> str:
    """Median margin (25-75% band) vs budget per attack, the clean inputs at 0; panel per model."""
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        models = list(dict.fromkeys(r["model"] for r in rows))
        fig, axes = plots._figure(len(models), sharey=False)
        for ax, model in zip(axes, models, strict=True):
            xs_all: list[float] = [0.0]
            for i, probe in enumerate(
                dict.fromkeys(r["probe"] for r in rows if r["model"] == model)
            ):
                pr = [r for r in rows if r["model"] == model and r["probe"] == probe]
                c = pr[0]["clean"]
                xs = [0.0, *[r["level"] for r in pr]]
                med = [c["median"], *[r["attacked"]["median"] for r in pr]]
                lo = [c["q25"], *[r["attacked"]["q25"] for r in pr]]
                hi = [c["q75"], *[r["attacked"]["q75"] for r in pr]]
                (line,) = ax.plot(xs, med, marker=plots._MARKERS[i % len(plots._MARKERS)], ms=4,
                                  label=probe, clip_on=False, zorder=3)  # fmt: skip
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
                xs_all += xs
            ax.axhline(0.0, color="#555", lw=0.8, ls="--")
            lim = ax.get_ylim()
            plots.finish_axes(ax, xs_all, axis)
            ax.set_ylim(*lim)  # finish_axes sets an accuracy range; margins are logits
            ax.set_title(model)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("logit margin (median, 25-75%)")
        fig.suptitle(f"Logit margin vs {axis}")
        return plots._svg(fig)
