"""Report section: conformal prediction -- coverage vs ``1 - alpha`` and mean set size, clean and
under attack (records of ``kind: conformal`` probes, :mod:`robustlab.certify.conformal_probe`).

Per (model, conformal probe, attack eps) the section shows the empirical coverage (share of test
examples whose label is in the set) with its 95% Clopper-Pearson interval, the target
``1 - alpha``, whether the method *guarantees* coverage at that eps (split conformal: clean only;
RSCP+: up to its certified eps), and the mean set size; a plot per model draws coverage and set
size against eps. A guaranteed row whose coverage lies below ``1 - alpha`` by more than three
standard deviations of a finite-sample split (``sqrt(alpha (1 - alpha) (1/n_test + 1/n_cal))``)
is flagged: it points to a bug, not to bad luck.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, num, pct, table
from robustlab.report.format import level as fmt_level


def _ci(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def _col(g: pd.DataFrame, name: str, default: float) -> pd.Series:
    return pd.to_numeric(g[name]) if name in g else pd.Series(default, index=g.index)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for (model, probe, level), g in df.groupby(["model", "probe", "level"], sort=True):
        g = g[g["correct"].notna()]
        n = len(g)
        if n == 0:
            continue
        k = int(g["correct"].sum())
        alpha = float(_col(g, "x.alpha", float("nan")).iloc[0])
        n_cal = float(_col(g, "x.n_calibration", float("nan")).iloc[0])
        guaranteed = bool(_col(g, "x.guaranteed", 0).iloc[0])
        lo, hi = _ci(k, n)
        tol = 3 * math.sqrt(alpha * (1 - alpha) * (1 / n + 1 / n_cal)) if n_cal > 0 else 0.0
        rows.append(
            {"model": str(model), "probe": str(probe), "eps": float(level), "n": n,
             "coverage": k / n, "lo": lo, "hi": hi, "target": 1 - alpha,
             "set_size": float(_col(g, "x.set_size", float("nan")).mean()),
             "guaranteed": guaranteed,
             "violated": guaranteed and k / n < 1 - alpha - tol}
        )  # fmt: skip
    return rows


@report_sections.register("conformal")
class Conformal:
    """Conformal prediction: coverage vs 1 - alpha and mean set size, clean and under attack."""

    title = "Conformal prediction"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df or not (df["kind"] == "conformal").any():
            return None
        from robustlab.report.levels import axis_for, probe_axes

        rows = _rows(df[df["kind"] == "conformal"])
        axes = probe_axes(info)
        for r in rows:
            r["axis"] = axis_for(axes, "conformal", r["probe"]).label
        return {"rows": rows} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        note = (
            "<p>Coverage is the share of test examples whose label is in the prediction set; "
            "split conformal guarantees 1 - alpha on clean data only, RSCP+ up to its certified "
            "L2 eps.</p>"
        )
        parts = [note]
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in data["rows"]:
            groups.setdefault(r.get("axis") or "attack eps", []).append(r)
        for axis, rows in groups.items():
            body = [
                [e(r["model"]), e(r["probe"]), fmt_level(r["eps"]),
                 f"{pct(r['coverage'])} [{pct(r['lo'])}, {pct(r['hi'])}]", pct(r["target"]),
                 "yes" if r["guaranteed"] else "no", num(r["set_size"], 2), str(r["n"]),
                 "BELOW 1 - alpha: a bug" if r["violated"] else "ok"]
                for r in rows
            ]  # fmt: skip
            head = ["model", "method", axis, "coverage [95% CI]", "1 - alpha", "guaranteed",
                    "mean set size", "test examples", "check"]  # fmt: skip
            heading = f"<h3>{e(axis)}</h3>" if len(groups) > 1 else ""
            parts.append(heading + f"<figure>{_plot(rows, axis)}</figure>"
                         + table(head, body, num_cols=[2, 3, 4, 6, 7]))  # fmt: skip
        return "\n".join(parts)


def _plot(rows: list[dict[str, Any]], axis: str = "attack eps") -> str:
    import matplotlib
    from matplotlib.figure import Figure

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        models = list(dict.fromkeys(r["model"] for r in rows))
        fig = Figure(figsize=(10.0, 3.2 * len(models)), layout="constrained")
        axes = fig.subplots(len(models), 2, squeeze=False)
        for (ax_cov, ax_size), model in zip(axes, models, strict=True):
            mine = [r for r in rows if r["model"] == model]
            for i, probe in enumerate(dict.fromkeys(r["probe"] for r in mine)):
                pr = [r for r in mine if r["probe"] == probe]
                eps = [r["eps"] for r in pr]
                marker = plots._MARKERS[i % len(plots._MARKERS)]
                line = ax_cov.plot(eps, [r["coverage"] for r in pr], marker=marker, label=probe,
                                   clip_on=False, zorder=3)  # fmt: skip
                err = [[r["coverage"] - r["lo"] for r in pr], [r["hi"] - r["coverage"] for r in pr]]
                ax_cov.errorbar(eps, [r["coverage"] for r in pr], yerr=err, fmt="none",
                                color=line[0].get_color(), alpha=0.5)  # fmt: skip
                sizes = [float("nan") if r["set_size"] is None else r["set_size"] for r in pr]
                ax_size.plot(eps, sizes, marker=marker, label=probe, clip_on=False, zorder=3)
            for target in sorted({r["target"] for r in mine if r["target"] is not None}):
                ax_cov.axhline(target, color="k", linestyle="--", linewidth=0.8)
            ax_cov.set_title(f"{model}: coverage (dashed: 1 - alpha)")
            ax_size.set_title(f"{model}: mean set size")
            levels = [r["eps"] for r in mine]
            plots.finish_axes(ax_cov, levels, axis)
            plots.finish_axes(ax_size, levels, axis)
            top = max([r["set_size"] for r in mine if r["set_size"] is not None] or [1.0])
            ax_size.set_ylim(-0.04 * top, 1.08 * top)  # set sizes, not rates
            ax_size.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return plots._svg(fig)
