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
        levels = sorted(g["level"].unique())
        grid = np.linspace(0.0, max(r_max, float(levels[-1]), 1e-9) * 1.05, GRID)
        acc = [float((hit & (radius >= r)).mean()) for r in grid]
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


def _json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain JSON values (numpy scalars -> Python, NaN -> None)."""
    from robustlab.report.build import _clean_json

    return _clean_json(rows)


@report_sections.register("certification_curves")
class CertificationCurves:
    """Certified accuracy vs radius per certifier: one plot per norm, and the table at the
    suite's radii with 95% CIs."""

    title = "Certification"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df:
            return None
        cert = df[df["kind"] == "certifier"]
        if cert.empty:
            return None
        from robustlab.report import tables
        from robustlab.report.levels import axis_for, probe_axes

        axes = probe_axes(info)
        curves = _curves(cert)
        for c in curves:
            axis = axis_for(axes, "certifier", c["probe"])
            c.update(axis=axis.label, norm=axis.norm)
        rows = tables.certifiers(cert).to_dict("records")
        for r in rows:
            r["axis"] = axis_for(axes, "certifier", str(r["probe"])).label
        order = {p: i for i, p in enumerate(axes)}  # suite order

        def key(r: dict[str, Any]) -> Any:
            return order.get(str(r["probe"]), len(order)), str(r["probe"])

        curves.sort(key=key)
        rows.sort(key=key)
        return {"curves": curves, "rows": _json(rows)}

    def render(self, data: dict[str, Any]) -> str:
        from robustlab.report.format import ci, e, level

        curves, rows = data["curves"], data.get("rows") or []
        if not curves:
            return '<p class="muted">No certifiers in this run.</p>'
        samples = {(c["model"], c["probe"]): c["samples"] for c in curves}
        parts = []
        for axis in dict.fromkeys(c.get("axis") or "radius" for c in curves):
            mine = [c for c in curves if (c.get("axis") or "radius") == axis]
            at = [r for r in rows if (r.get("axis") or "radius") == axis]
            parts.append(f"<h3>{e(axis)}</h3><figure>{_plot(mine, at, axis)}</figure>")
            parts.append(
                '<p class="muted">Line: share of examples certified correct at least up to each '
                "radius (from every example's certified radius); markers: the suite's radii with "
                "95% CIs.</p>"
            )
            if at:
                body = [
                    [e(r["model"]), e(r["probe"]), level(r["level"]),
                     ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
                     pct(r.get("abstain_rate")), num(r["n"], 0),
                     num(samples.get((r["model"], r["probe"])), 0)]
                    for r in at
                ]  # fmt: skip
                head = ["model", "certifier", axis, "certified accuracy [95% CI]", "abstained",
                        "n", "samples / cert."]  # fmt: skip
                parts.append(table(head, body, num_cols=range(2, 7)))
            else:  # content from before the rows were stored: the levels of the curves
                body = [
                    [e(c["model"]), e(c["probe"]), str(c["n"]), pct(c["abstain"]),
                     "; ".join(f"{level(lv)}: {pct(a)}" for lv, a in zip(c["levels"], c["at_levels"], strict=True)),
                     num(c["samples"], 0) if c["samples"] is not None else "—"]
                    for c in mine
                ]  # fmt: skip
                head = ["model", "certifier", "examples", "abstain", f"certified acc. at {axis}",
                        "samples / cert."]  # fmt: skip
                parts.append(table(head, body, num_cols=[2, 3, 5]))
        return "\n".join(parts)


def _plot(curves: list[dict[str, Any]], rows: list[dict[str, Any]], axis: str) -> str:
    """Certified accuracy vs radius (one norm): the curve from every example's radius, and the
    suite's radii as markers with their 95% CI."""
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        models = list(dict.fromkeys(c["model"] for c in curves))
        fig, axes = plots._figure(len(models))
        for ax, model in zip(axes, models, strict=True):
            xs: list[float] = [0.0]
            span: list[float] = []
            for i, c in enumerate(c for c in curves if c["model"] == model):
                (line,) = ax.plot(c["grid"], c["acc"], label=c["probe"], clip_on=False, zorder=3)
                mine = [r for r in rows if r["model"] == model and r["probe"] == c["probe"]]
                pts = [
                    (r["level"], r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]) for r in mine
                ]
                pts = pts or list(zip(c["levels"], *[c["at_levels"]] * 3, strict=True))
                if pts:
                    lv, acc, lo, hi = (list(t) for t in zip(*pts, strict=True))
                    err = [[a - (b if b is not None else a) for a, b in zip(acc, lo, strict=True)],
                           [(h if h is not None else a) - a for a, h in zip(acc, hi, strict=True)]]  # fmt: skip
                    ax.errorbar(lv, acc, yerr=err, fmt=plots._MARKERS[i % len(plots._MARKERS)],
                                ms=4, capsize=2, color=line.get_color(), clip_on=False, zorder=4)  # fmt: skip
                    xs += lv
                span += [c["grid"][0], c["grid"][-1]]
            ax.set_title(model)
            plots.finish_axes(ax, xs, axis, span=span)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("certified accuracy")
        fig.suptitle(f"Certified accuracy vs {axis}")
        return plots._svg(fig)
