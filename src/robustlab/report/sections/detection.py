"""Report section: failure and OOD detection (records of the ``ood`` diagnosis,
:mod:`robustlab.diagnose.ood`).

Per model replicate, probe and detector (``extra["score_<detector>"]``, higher = more
in-distribution / more likely correct), computed from the records with
:mod:`robustlab.metrics.detection`:

* **failure detection** on the scored data (role ``test``): positives are the correctly
  classified examples; AUROC (95% stratified bootstrap interval), AUPR (average precision with the
  correct examples positive) and FPR95 (the share of wrong predictions still accepted when 95% of
  the correct ones are);
* **OOD detection** (when the probe has an OOD set, role ``ood``): positives are the ID examples;
  AUROC (bootstrap interval), AUPR-In (ID positive) and FPR95 (the share of OOD examples accepted
  when 95% of the ID examples are; Liang et al. 2018).

A plot per model draws the OOD ROC curves of every detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import ci, e, num, pct, table
from robustlab.report.sections import diagnosis_records

PREFIX = "x.score_"
N_BOOT = 200


def _metrics(scores: np.ndarray, pos: np.ndarray) -> dict[str, Any]:
    from robustlab.metrics.detection import aupr, auroc, bootstrap_ci, fpr_at_tpr

    if pos.all() or not pos.any():  # one class: undefined (e.g. a model with no errors)
        return {"auroc": None, "lo": None, "hi": None, "aupr": None, "fpr95": None}
    lo, hi = bootstrap_ci(auroc, scores, pos, n=N_BOOT)
    return {
        "auroc": float(auroc(scores, pos)),
        "lo": lo,
        "hi": hi,
        "aupr": float(aupr(scores, pos)),
        "fpr95": float(fpr_at_tpr(scores, pos, 0.95)),
    }


def _roc(scores: np.ndarray, pos: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    from robustlab.metrics.detection import roc_curve

    fpr, tpr = roc_curve(scores, pos)
    if len(fpr) > points:  # thin the curve for the SVG, keeping both ends
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, points).round().astype(int)])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def _rows(df: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, curves = [], []
    multi = df.groupby("model")["replicate"].nunique().max() > 1
    for (model, rep, probe), g in df.groupby(["model", "replicate", "probe"], sort=True):
        test = g[g["x.role"] == "test"]
        ood = g[g["x.role"] == "ood"]
        name = f"{model} #{rep}" if multi else str(model)
        dets = [c for c in g.columns if c.startswith(PREFIX) and g[c].notna().any()]
        graded = test[test["correct"].notna()]
        acc = float(graded["correct"].mean()) if len(graded) else None
        for c in dets:
            det = c[len(PREFIX) :]
            # examples without a score (non-finite model outputs: error records) are left out
            scored = graded[pd.to_numeric(graded[c]).notna()]
            s_test = pd.to_numeric(scored[c]).to_numpy(np.float64)
            fail = _metrics(s_test, scored["correct"].to_numpy(np.float64) == 1)
            row = {"model": name, "probe": str(probe), "detector": det, "n_test": len(test),
                   "n_wrong": int((graded["correct"] == 0).sum()), "accuracy": acc,
                   "n_ood": len(ood), "fail": fail, "ood": None}  # fmt: skip
            if len(ood):
                s_id = pd.to_numeric(test[c]).dropna().to_numpy(np.float64)
                s_ood = pd.to_numeric(ood[c]).dropna().to_numpy(np.float64)
                s = np.r_[s_id, s_ood]
                pos = np.r_[np.ones(len(s_id), bool), np.zeros(len(s_ood), bool)]
                row["ood"] = _metrics(s, pos)
                curves.append({"model": name, "probe": str(probe), "detector": det, **_roc(s, pos)})
            rows.append(row)
    return rows, curves


@report_sections.register("detection")
class Detection:
    """Failure and OOD detection: AUROC / AUPR / FPR95 per model and detector, OOD ROC curves."""

    title = "Failure and OOD detection"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df or "x.role" not in df:
            return None
        mine = diagnosis_records(df, info, "ood")
        if mine.empty:
            return None
        rows, curves = _rows(mine)
        return {"rows": rows, "curves": curves} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        note = (
            "<p>Scores are higher = more in-distribution / more likely correct. Failure "
            "detection: correct predictions on the scored data are the positives; OOD detection: "
            "the in-distribution examples are the positives (AUPR-In), FPR95 is the share of OOD "
            "examples (failures) still accepted when 95% of the positives are. AUROC with a 95% "
            f"stratified bootstrap interval ({N_BOOT} resamples). A dash: undefined (e.g. no "
            "wrong predictions).</p>"
        )
        head = ["model", "probe", "detector", "accuracy", "failure AUROC", "failure AUPR",
                "failure FPR95", "OOD AUROC", "OOD AUPR-In", "OOD FPR95", "ID / wrong / OOD"]  # fmt: skip
        body = []
        for r in data["rows"]:
            f, o = r["fail"], r["ood"] or {}
            body.append([
                e(r["model"]), e(r["probe"]), e(r["detector"]), pct(r["accuracy"]),
                ci(f["auroc"], f["lo"], f["hi"], as_pct=False), num(f["aupr"]), num(f["fpr95"]),
                ci(o.get("auroc"), o.get("lo"), o.get("hi"), as_pct=False), num(o.get("aupr")),
                num(o.get("fpr95")), f"{r['n_test']} / {r['n_wrong']} / {r['n_ood']}",
            ])  # fmt: skip
        parts = [note, table(head, body, num_cols=list(range(3, 11)))]
        if data.get("curves"):
            parts.append(f"<figure>{_plot(data['curves'])}</figure>")
        return "\n".join(parts)


def _plot(curves: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        panels = list(dict.fromkeys((c["model"], c["probe"]) for c in curves))
        fig, axes = plots._figure(len(panels), width=4.6, height=3.6)
        for ax, (model, probe) in zip(axes, panels, strict=True):
            for c in curves:
                if (c["model"], c["probe"]) == (model, probe):
                    ax.plot(c["fpr"], c["tpr"], label=c["detector"], linewidth=1.2)
            ax.plot([0, 1], [0, 1], color="k", linestyle=":", linewidth=0.8)
            ax.set_title(f"{model} ({probe}): OOD ROC")
            ax.set_xlabel("FPR (OOD accepted)")
            ax.set_ylabel("TPR (ID accepted)")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.legend(fontsize=8, loc="lower right")
        return plots._svg(fig)
