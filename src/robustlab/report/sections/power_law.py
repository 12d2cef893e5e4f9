"""Report section: adversarial error vs epsilon as a power law (Cubuk, Zoph, Schoenholz & Le,
"Intriguing Properties of Adversarial Examples", 2017/2018; S34).

S34 finds that adversarial error grows as ``err(eps) ~ A eps^b`` for small ``eps`` across models,
data sets and attacks. Per model and per attack whose levels are Lp epsilons, the section fits
``log err = log A + b log eps`` by least squares over the attack's levels
(:func:`robustlab.metrics.vision.adversarial_error_power_law`: the error at a level is the attack's
success rate on the examples the model classifies correctly, when records carry it, else
``1 - accuracy``; levels with zero error have no logarithm and are left out), and shows the
exponent ``b``, the prefactor ``A`` and R^2 of the log-log fit, with one log-log plot per norm.

Limits: a fit needs two levels with positive error; R^2 of a two-point fit is 1 by construction
(the table says how many points each fit used); at large epsilon the error saturates near 1 and
the power law no longer holds (the paper fits the small-epsilon regime), so a low R^2 often means
the suite's largest levels are past saturation.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.core.registry import report_sections
from robustlab.report.format import e, level, num, table
from robustlab.report.sections._vision import model_order, plain


def _error_points(g: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Adversarial error per level, as the power-law fit reads it."""
    if "x.success" in g and "x.clean_correct" in g:
        sub = g[g["x.clean_correct"] == 1]
        err = sub.groupby("level")["x.success"].mean()
    else:
        err = 1.0 - g.assign(_c=g["correct"].fillna(0.0)).groupby("level")["_c"].mean()
    return [float(v) for v in err.index], [float(v) for v in err.to_numpy()]


@report_sections.register("power_law")
class PowerLaw:
    """Exponent and R^2 of adversarial error ~ A eps^b per model and Lp attack (S34)."""

    title = "Adversarial error power law (S34)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        from robustlab.metrics.vision import adversarial_error_power_law
        from robustlab.report.levels import axis_for, probe_axes

        if df.empty or "kind" not in df:
            return None
        att = df[df["kind"] == "attack"]
        if att.empty:
            return None
        axes = probe_axes(info)
        order = {m: i for i, m in enumerate(model_order(info, att))}
        rows = []
        for (model, probe), g in att.groupby(["model", "probe"], sort=False):
            axis = axis_for(axes, "attack", str(probe))
            if axis.norm is None or g["level"].nunique() < 2:  # not an Lp epsilon, or one level
                continue
            eps, err = _error_points(g)
            row: dict[str, Any] = {
                "model": str(model), "probe": str(probe), "axis": axis.label, "eps": eps,
                "error": err, "exponent": None, "coef": None, "r2": None, "n": 0,
            }  # fmt: skip
            with contextlib.suppress(ConfigError):  # fewer than two levels with error > 0
                row |= adversarial_error_power_law(g)
            rows.append(row)
        if not rows:
            return None
        probes = list(axes)
        rows.sort(
            key=lambda r: (
                order.get(r["model"], len(order)),
                probes.index(r["probe"]) if r["probe"] in probes else len(probes),
            )
        )
        return plain({"rows": rows})

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]
        parts = [
            "<p>Least-squares fit of log error = log A + b log &epsilon; over each attack's "
            "levels with positive error (error: the attack's success rate on correctly "
            "classified examples). S34 reports exponents near 1 for small &epsilon;; R&sup2; of "
            "a 2-point fit is 1 by construction.</p>"
        ]
        for axis in dict.fromkeys(r["axis"] for r in rows):
            mine = [r for r in rows if r["axis"] == axis]
            fitted = [r for r in mine if r["exponent"] is not None]
            parts.append(f"<h3>{e(axis)}</h3>")
            if fitted:
                parts.append(f"<figure>{_plot(fitted, axis)}</figure>")
            body = [
                [e(r["model"]), e(r["probe"]),
                 ", ".join(f"{level(x)}: {num(y, 3)}" for x, y in zip(r["eps"], r["error"], strict=True)),
                 num(r["exponent"], 3), num(r["coef"], 3), num(r["r2"], 3),
                 str(r["n"]) if r["exponent"] is not None else "needs 2 levels with error > 0"]
                for r in mine
            ]  # fmt: skip
            head = ["model", "attack", f"adversarial error at {axis}", "exponent b",
                    "prefactor A", "R²", "points fitted"]  # fmt: skip
            parts.append(table(head, body, num_cols=[3, 4, 5, 6]))
        return "\n".join(parts)


def _plot(rows: list[dict[str, Any]], axis: str) -> str:
    """Log-log: each attack's error points and its fitted line, one panel per model."""
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        models = list(dict.fromkeys(r["model"] for r in rows))
        fig, axes = plots._figure(len(models))
        for ax, model in zip(axes, models, strict=True):
            for i, r in enumerate(r for r in rows if r["model"] == model):
                pts = [(x, y) for x, y in zip(r["eps"], r["error"], strict=True) if x > 0 and y > 0]
                xs, ys = (np.array(t) for t in zip(*pts, strict=True))
                grid = np.geomspace(xs.min(), xs.max(), 32)
                label = f"{r['probe']}: b={r['exponent']:.2f}, R²={r['r2']:.2f}"
                (line,) = ax.plot(grid, r["coef"] * grid ** r["exponent"], label=label)
                ax.plot(xs, ys, ls="none", marker=plots._MARKERS[i % len(plots._MARKERS)], ms=4,
                        color=line.get_color(), clip_on=False, zorder=3)  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"{axis}, log scale")
            ax.set_title(model)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("adversarial error, log scale")
        fig.suptitle(f"Adversarial error vs {axis} (log-log) with fitted power laws")
        return plots._svg(fig)
