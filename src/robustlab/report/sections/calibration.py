"""Report section: calibration, calibration under shift and selective prediction (records of
``calibration`` diagnosis probes, :mod:`robustlab.diagnose.calibration`).

Per (calibration probe, model, level) -- replicates pooled, examples with errors left out -- the
table shows accuracy, ECE with equal-width and equal-mass bins, MCE (equal-width), the Brier score
(summed over classes, in [0, 2]) and the NLL, each before -> after temperature scaling, the AURC
and E-AURC of the max-softmax confidence, and the fitted temperature. Plots: reliability diagrams
(equal-width bins), ECE against the shift's severity (before and after temperature scaling) and
risk-coverage curves. Everything is computed here from the stored records by
:mod:`robustlab.metrics.calibration`; a degenerate binning (e.g. equal-mass bins over identical
confidences) shows as a dash with the reason in a note.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.core.registry import report_sections
from robustlab.metrics import calibration as cal
from robustlab.report.format import e, num, pct, table
from robustlab.report.format import level as fmt_level
from robustlab.report.sections import diagnosis_probes, diagnosis_records

NAME = "calibration"
CURVE_POINTS = 101  # risk-coverage points kept per curve (the curve itself has one per example)


def _f(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _try(fn: Any, notes: set[str]) -> float | None:
    try:
        return _f(fn())
    except ConfigError as err:
        notes.add(str(err))
        return None


def _axis(params: dict[str, Any]) -> str:
    shift = params.get("shift")
    if not shift:
        return "level"
    from robustlab.report.levels import perturbation_axis

    return f"{shift['name']} {perturbation_axis(shift['name'], shift.get('params')).label}"


def _row(g: pd.DataFrame, bins: int, notes: set[str]) -> dict[str, Any]:
    a = g["correct"].to_numpy(dtype=np.float64)
    r: dict[str, Any] = {"n": len(g), "accuracy": float(a.mean())}
    for suffix in ("", "_ts"):
        c = g[f"x.confidence{suffix}"].to_numpy(dtype=np.float64)
        r[f"ece_width{suffix}"] = _try(lambda c=c: cal.ece(c, a, bins, "width"), notes)
        r[f"ece_mass{suffix}"] = _try(lambda c=c: cal.ece(c, a, bins, "mass"), notes)
        r[f"mce{suffix}"] = _try(lambda c=c: cal.mce(c, a, bins, "width"), notes)
        r[f"brier{suffix}"] = _f(float(g[f"x.brier{suffix}"].mean()))
        r[f"nll{suffix}"] = _f(float(g[f"x.nll{suffix}"].mean()))
        r[f"aurc{suffix}"] = _try(lambda c=c: cal.aurc(c, a), notes)
        r[f"eaurc{suffix}"] = _try(lambda c=c: cal.excess_aurc(c, a), notes)
    conf = g["x.confidence"].to_numpy(dtype=np.float64)
    rel = cal.reliability(conf, a, bins, "width")
    keep = rel.count > 0
    r["reliability"] = {
        "confidence": rel.confidence[keep].tolist(),
        "accuracy": rel.accuracy[keep].tolist(),
        "count": rel.count[keep].astype(int).tolist(),
    }
    cov, risk = cal.risk_coverage(conf, a)
    pick = np.unique(np.round(np.linspace(0, len(cov) - 1, CURVE_POINTS)).astype(int))
    r["risk_coverage"] = {"coverage": cov[pick].tolist(), "risk": risk[pick].tolist()}
    temps = g["x.temperature"].to_numpy(dtype=np.float64)
    r["temperature"] = sorted({round(float(t), 4) for t in temps})
    r["t_at_bound"] = (
        int(g["x.t_at_bound"].fillna(0).astype(int).any()) if "x.t_at_bound" in g else 0
    )
    r["fit"] = str(g["x.fit"].iloc[0]) if "x.fit" in g else ""
    return r


@report_sections.register(NAME)
class CalibrationSection:
    """Calibration (ECE, MCE, Brier, NLL, temperature scaling), under shift, and AURC."""

    title = "Calibration and selective prediction"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        probes = diagnosis_probes(info, NAME)
        d = diagnosis_records(df, info, NAME)
        if d.empty or "x.confidence" not in d:
            return None
        d = d[d["correct"].notna() & d["x.confidence"].notna()]
        if d.empty:
            return None
        rows, notes = [], set()
        for (probe, model, level), g in d.groupby(["probe", "model", "level"], sort=True):
            params = probes[str(probe)]
            bins = int(params.get("bins", 15))
            r = _row(g, bins, notes)
            r.update(probe=str(probe), model=str(model), level=float(level), bins=bins,
                     axis=_axis(params))  # fmt: skip
            rows.append(r)
        return {"rows": rows, "notes": sorted(notes)}

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]
        bins = sorted({r["bins"] for r in rows})
        intro = (
            "<p>Confidence is the max softmax probability; ECE weighs each bin's |accuracy - mean "
            f"confidence| by its share of examples ({', '.join(map(str, bins))} bins; "
            "equal-width bins of [0, 1] and equal-mass bins that never split tied confidences), "
            "MCE is the largest gap (equal-width). Brier is summed over classes (range [0, 2]), NLL "
            "in nats. <i>a → b</i>: before → after temperature scaling (T fitted on held-out clean "
            "data: see 'T fitted on'). AURC: area under the risk-coverage curve when accepting "
            "examples by decreasing confidence (E-AURC: minus the ideal ranking's). Replicates "
            "are pooled.</p>"
        )
        parts = [intro]
        for probe in dict.fromkeys(r["probe"] for r in rows):
            mine = [r for r in rows if r["probe"] == probe]
            axis = mine[0]["axis"]
            head = ["model", axis, "n", "accuracy", "ECE (width)", "ECE (mass)", "MCE", "Brier",
                    "NLL", "AURC", "E-AURC", "T"]  # fmt: skip
            body = [
                [e(r["model"]), fmt_level(r["level"]), str(r["n"]), pct(r["accuracy"]),
                 _pair(r, "ece_width"), _pair(r, "ece_mass"), _pair(r, "mce"), _pair(r, "brier"),
                 _pair(r, "nll"), num(r["aurc"], 4), num(r["eaurc"], 4),
                 ", ".join(num(t, 3) for t in r["temperature"])
                 + (" (at a bound)" if r["t_at_bound"] else "")]
                for r in mine
            ]  # fmt: skip
            heading = f"<h3>{e(probe)}</h3>" if len({r["probe"] for r in rows}) > 1 else ""
            fits = ", ".join(e(f) for f in dict.fromkeys(r["fit"] for r in mine))
            parts.append(heading + f"<p>T fitted on: {fits}.</p>"
                         + table(head, body, num_cols=list(range(1, 12))))  # fmt: skip
            parts.append(f"<figure>{_reliability_plot(mine)}</figure>")
            if len({r["level"] for r in mine}) > 1:
                parts.append(f"<figure>{_ece_plot(mine, axis)}</figure>")
            parts.append(f"<figure>{_risk_plot(mine)}</figure>")
        if any(r["t_at_bound"] for r in rows):
            parts.append(
                "<p>T at a bound: the held-out NLL kept falling towards the search bound (e.g. a "
                "fitting set without errors, such as the training data): use held-out data.</p>"
            )
        if data.get("notes"):
            items = "".join(f"<li>{e(n)}</li>" for n in data["notes"])
            parts.append(f"<p>Metrics not computed:</p><ul>{items}</ul>")
        return "\n".join(parts)


def _pair(r: dict[str, Any], key: str) -> str:
    return f"{num(r[key], 3)} → {num(r[key + '_ts'], 3)}"


def _models(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def _reliability_plot(rows: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots
    from robustlab.report.format import level_text

    with matplotlib.rc_context(plots._RC):
        models = _models(rows)
        fig, axes = plots._figure(len(models), width=4.6, height=3.6)
        for ax, model in zip(axes, models, strict=True):
            ax.plot([0, 1], [0, 1], color="k", linestyle="--", linewidth=0.8)
            for i, r in enumerate(x for x in rows if x["model"] == model):
                rel = r["reliability"]
                ax.plot(rel["confidence"], rel["accuracy"], marker=plots._MARKERS[i % 10],
                        markersize=4, label=f"{level_text(r['level'])} (ECE {num(r['ece_width'], 3)})",
                        clip_on=False)  # fmt: skip
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("mean confidence in bin")
            ax.set_ylabel("accuracy in bin")
            ax.set_title(f"{model}: reliability (equal-width bins)")
            ax.legend(fontsize=7, title=rows[0]["axis"], title_fontsize=7, loc="upper left")
        return plots._svg(fig)


def _ece_plot(rows: list[dict[str, Any]], axis: str) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        models = _models(rows)
        fig, axes = plots._figure(len(models), width=4.6, height=3.2)
        for ax, model in zip(axes, models, strict=True):
            mine = [r for r in rows if r["model"] == model]
            lv = [r["level"] for r in mine]
            for key, label, style in (("ece_width", "ECE (width)", "-"),
                                      ("ece_width_ts", "ECE (width), T-scaled", "--"),
                                      ("ece_mass", "ECE (mass)", ":")):  # fmt: skip
                ys = [plots._num(r[key]) for r in mine]
                ax.plot(lv, ys, marker="o", linestyle=style, label=label, clip_on=False)
            ax.plot(lv, [1 - r["accuracy"] for r in mine], marker="s", color="grey",
                    linewidth=0.8, label="error rate", clip_on=False)  # fmt: skip
            plots.finish_axes(ax, lv, axis)
            top = (
                max(
                    [
                        v
                        for r in rows
                        for v in (
                            r["ece_width"],
                            r["ece_width_ts"],
                            r["ece_mass"],
                            1 - r["accuracy"],
                        )
                        if v is not None
                    ],
                    default=1.0,
                )
                or 1.0
            )
            ax.set_ylim(-0.04 * top, 1.1 * top)  # errors of a few percent, not rates in [0, 1]
            ax.set_ylabel("calibration error")
            ax.set_title(f"{model}: ECE vs {axis}")
            ax.legend(fontsize=7)
        return plots._svg(fig)


def _risk_plot(rows: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots
    from robustlab.report.format import level_text

    with matplotlib.rc_context(plots._RC):
        models = _models(rows)
        fig, axes = plots._figure(len(models), width=4.6, height=3.2)
        for ax, model in zip(axes, models, strict=True):
            for r in (x for x in rows if x["model"] == model):
                rc = r["risk_coverage"]
                ax.plot(rc["coverage"], rc["risk"], clip_on=False,
                        label=f"{level_text(r['level'])} (AURC {num(r['aurc'], 3)})")  # fmt: skip
            ax.set_xlim(0, 1.02)
            ax.set_xlabel("coverage")
            ax.set_ylabel("selective risk")
            ax.set_title(f"{model}: risk-coverage")
            ax.legend(fontsize=7, title=rows[0]["axis"], title_fontsize=7)
        return plots._svg(fig)
