"""Report section: robust counterfactual explanations under model change (S42; records of the
``counterfactuals`` diagnosis, :mod:`robustlab.diagnose.counterfactuals`).

Per (model, probe): how often a closest and a Stability-robust (T-Rex) counterfactual was found,
their cost (L2 distance to the example) and Stability, and for each changed model (other training
seeds, fine-tuned versions) the share of counterfactuals still valid on it, closest vs stable,
with the paired counts (valid only as stable / only as closest) and the changed model's agreement
with the original on the data itself (a naturally-occurring change keeps it high). The paper's
claim is that the stable ones stay valid more often; the section shows what was measured.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, num, pct, table
from robustlab.report.sections import diagnosis_records

NAME = "counterfactuals"


def _num(g: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(g[col], errors="coerce") if col in g else pd.Series(dtype=float)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for (model, probe), g in df.groupby(["model", "probe"], sort=True):
        found = _num(g, "x.closest_found") == 1
        labels = sorted(
            {lab for v in g.get("x.changed_models", pd.Series(dtype=str)).dropna()
             for lab in str(v).split(",") if lab}
        )  # fmt: skip
        changed = []
        for lab in labels:
            c = _num(g, f"x.closest_valid.{lab}")[found]
            s = _num(g, f"x.stable_valid.{lab}")[found]
            both = c.notna() & s.notna()
            changed.append(
                {"label": lab, "n": int(both.sum()),
                 "closest": float(c[both].mean()) if both.any() else None,
                 "stable": float(s[both].mean()) if both.any() else None,
                 "stable_only": int(((s == 1) & (c == 0))[both].sum()),
                 "closest_only": int(((c == 1) & (s == 0))[both].sum()),
                 "agree": float(_num(g, f"x.agree.{lab}").mean())}
            )  # fmt: skip
        dc, ds = _num(g, "x.closest_distance")[found], _num(g, "x.stable_distance")[found]
        rc, rs = _num(g, "x.closest_stability")[found], _num(g, "x.stable_stability")[found]

        def avg(key: str, rows: list[dict[str, Any]] = changed) -> float | None:
            vals = [r[key] for r in rows if r[key] is not None]
            return sum(vals) / len(vals) if vals else None

        out.append(
            {"model": str(model), "probe": str(probe), "n": len(g),
             "closest_found": float(found.mean()),
             "stable_found": float((_num(g, "x.stable_found") == 1).mean()),
             "closest_distance": float(dc.median()) if len(dc) else None,
             "stable_distance": float(ds.median()) if len(ds) else None,
             "closest_stability": float(rc.mean()) if len(rc) else None,
             "stable_stability": float(rs.mean()) if len(rs) else None,
             "closest_valid": avg("closest"), "stable_valid": avg("stable"),
             "dist_closest": [float(v) for v in dc.dropna()],
             "dist_stable": [float(v) for v in ds.dropna()],
             "changed": changed}
        )  # fmt: skip
    return out


@report_sections.register("counterfactuals")
class CounterfactualsSection:
    """Closest vs stable counterfactuals: validity under model change and cost (S42)."""

    title = "Counterfactual explanations under model change"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df:
            return None
        mine = diagnosis_records(df, info, NAME)
        if mine.empty:
            return None
        rows = _rows(mine)
        return {"rows": rows} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        parts = [
            "<p>For each example, the closest counterfactual (minimal L2 change that makes the "
            "model predict the target class) and a stable one (raised to Stability &ge; tau, "
            "Hamman et al. 2023). Valid under a changed model = that model also predicts the "
            "target class there. Agreement = the changed model's agreement with the original on "
            "the data itself.</p>"
        ]
        head = ["model", "probe", "examples", "found closest / stable",
                "median L2 closest / stable", "mean Stability closest / stable",
                "valid under change: closest", "stable"]  # fmt: skip
        body = [
            [e(r["model"]), e(r["probe"]), str(r["n"]),
             f"{pct(r['closest_found'])} / {pct(r['stable_found'])}",
             f"{num(r['closest_distance'])} / {num(r['stable_distance'])}",
             f"{num(r['closest_stability'])} / {num(r['stable_stability'])}",
             pct(r["closest_valid"]), pct(r["stable_valid"])]
            for r in data["rows"]
        ]  # fmt: skip
        parts.append(table(head, body, num_cols=[2, 3, 4, 5, 6, 7]))
        head2 = ["model", "probe", "changed model", "agreement on data", "CFs",
                 "valid: closest", "valid: stable", "only stable valid", "only closest valid"]  # fmt: skip
        body2 = [
            [e(r["model"]), e(r["probe"]), e(c["label"]), pct(c["agree"]), str(c["n"]),
             pct(c["closest"]), pct(c["stable"]), str(c["stable_only"]), str(c["closest_only"])]
            for r in data["rows"] for c in r["changed"]
        ]  # fmt: skip
        parts.append(table(head2, body2, num_cols=[3, 4, 5, 6, 7, 8]))
        parts.append(f"<figure>{_plot(data['rows'])}</figure>")
        return "\n".join(parts)


def _plot(rows: list[dict[str, Any]]) -> str:
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        fig = Figure(figsize=(10.0, 3.2 * len(rows)), layout="constrained")
        axes = fig.subplots(len(rows), 2, squeeze=False)
        for (ax_v, ax_d), r in zip(axes, rows, strict=True):
            labs = [c["label"] for c in r["changed"]]
            pos = np.arange(len(labs))
            for off, key, name in ((-0.2, "closest", "closest"), (0.2, "stable", "stable")):
                vals = [float("nan") if c[key] is None else c[key] for c in r["changed"]]
                ax_v.bar(pos + off, vals, width=0.4, label=name)
            ax_v.set_xticks(pos, labs, rotation=30, ha="right")
            ax_v.set_ylim(0, 1.2)  # room for the legend above the bars
            ax_v.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
            ax_v.set_ylabel("valid under changed model")
            ax_v.set_title(f"{r['model']} / {r['probe']}: validity")
            ax_v.legend(fontsize=8, ncol=2, loc="upper center")
            if r["dist_closest"] or r["dist_stable"]:
                ax_d.hist([r["dist_closest"], r["dist_stable"]], bins=20,
                          label=["closest", "stable"])  # fmt: skip
                ax_d.legend(fontsize=8)
            ax_d.set_xlabel("L2 distance to the example")
            ax_d.set_ylabel("counterfactuals")
            ax_d.set_title(f"{r['model']} / {r['probe']}: cost")
        return plots._svg(fig)
