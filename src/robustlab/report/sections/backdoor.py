"""Report section: backdoor (records of the ``backdoor`` diagnosis, :mod:`robustlab.diagnose.backdoor`).

Per model replicate and probe, from the records:

* **clean accuracy** (role ``test``: mean ``correct``) and, where the run has a model whose
  training data holds no poisons (e.g. ``ctrl-poisoned`` with ``rate: 0``), the difference to it;
* **attack success rate** (ASR, Li et al., ICCV 2023): the share of test examples whose true
  label is not the target that the trigger sends to the target (``to_target`` over
  ``nontarget``);
* **detection AUROC** of each defence (role ``train``, poisoned = positive, higher score = more
  suspicious; :func:`robustlab.metrics.detection.auroc`) over the whole training set and within
  the target class (where the dirty-label poisons sit), and activation clustering's
  relative-size flag as precision / recall.

A plot per poisoned model: histograms of each defence's scores in the target class, poisoned vs
clean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, num, pct, table
from robustlab.report.sections import diagnosis_records

DEFENCES = ("spectral", "clustering")


def _bool(s: pd.Series) -> np.ndarray:
    return s.astype(float).to_numpy() == 1


def _auroc(scores: np.ndarray, pos: np.ndarray) -> float | None:
    from robustlab.metrics.detection import auroc

    if pos.all() or not pos.any():
        return None
    return float(auroc(scores, pos))


def _rows(df: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, hists = [], []
    multi = df.groupby("model")["replicate"].nunique().max() > 1
    for (model, rep, probe), g in df.groupby(["model", "replicate", "probe"], sort=True):
        test, train = g[g["x.role"] == "test"], g[g["x.role"] == "train"]
        name = f"{model} #{rep}" if multi else str(model)
        nt = _bool(test["x.nontarget"])
        hit = _bool(test["x.to_target"])
        poisoned = _bool(train["x.poisoned"])
        labels = train["x.label"].astype(int).to_numpy()
        target = int(test["x.target"].iloc[0]) if len(test) else None
        row: dict[str, Any] = {
            "model": name, "probe": str(probe), "n_test": len(test),
            "accuracy": float(test["correct"].mean()) if len(test) else None,
            "asr": float(hit[nt].mean()) if nt.any() else None,
            "n_nontarget": int(nt.sum()), "n_train": len(train), "n_poisoned": int(poisoned.sum()),
            "target": target, "auroc": {}, "auroc_target": {},
        }  # fmt: skip
        in_t = labels == target if target is not None else np.zeros(len(labels), bool)
        for d in DEFENCES:
            col = f"x.{d}"
            if col not in train or train[col].isna().all():
                continue
            s = pd.to_numeric(train[col]).to_numpy(np.float64)
            row["auroc"][d] = _auroc(s, poisoned)
            row["auroc_target"][d] = _auroc(s[in_t], poisoned[in_t]) if in_t.any() else None
            if poisoned.any() and in_t.any():
                hists.append({"model": name, "probe": str(probe), "defence": d,
                              "poisoned": s[in_t & poisoned].round(5).tolist(),
                              "clean": s[in_t & ~poisoned].round(5).tolist()})  # fmt: skip
        if "x.ac_flag" in train and train["x.ac_flag"].notna().all():
            flag = _bool(train["x.ac_flag"])
            tp = int((flag & poisoned).sum())
            row["ac_precision"] = tp / int(flag.sum()) if flag.any() else None
            row["ac_recall"] = tp / int(poisoned.sum()) if poisoned.any() else None
        rows.append(row)
    refs = [r for r in rows if r["n_poisoned"] == 0 and r["accuracy"] is not None]
    for r in rows:
        same = [q for q in refs if q["probe"] == r["probe"] and q is not r]
        r["reference"] = same[0]["model"] if len(same) == 1 and r["n_poisoned"] else None
        r["delta_acc"] = (
            r["accuracy"] - same[0]["accuracy"] if r["reference"] and r["accuracy"] is not None
            else None
        )  # fmt: skip
    return rows, hists


@report_sections.register("backdoor")
class Backdoor:
    """Backdoor (CTRL): clean accuracy vs a clean model, attack success rate, poison-detection
    AUROC per defence, score histograms."""

    title = "Backdoor: CTRL trigger and poison detection"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df or "x.role" not in df:
            return None
        mine = diagnosis_records(df, info, "backdoor")
        if mine.empty:
            return None
        rows, hists = _rows(mine)
        return {"rows": rows, "hists": hists} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        note = (
            "<p>Clean accuracy on the test data; &Delta; to the run's model trained without "
            "poisons. ASR: the share of test images not of the target class that the CTRL "
            "trigger sends to the target. Detection AUROC (poisoned training examples positive) "
            "over the whole training set and within the target class; spectral signatures (Tran "
            "et al. 2018) and activation clustering (Chen et al. 2018). AC flag: smaller 2-means "
            "cluster of a class holding at most the size threshold. A dash: undefined (no "
            "poisons).</p>"
        )
        head = ["model", "probe", "clean acc", "Δ acc", "ASR", "target",
                "poisoned / train", "spectral AUROC (all / target)",
                "clustering AUROC (all / target)", "AC flag precision / recall"]  # fmt: skip
        body = []
        for r in data["rows"]:
            cells = []
            for d in DEFENCES:
                a, t = r["auroc"].get(d), r["auroc_target"].get(d)
                cells.append(f"{num(a)} / {num(t)}")
            dacc = r.get("delta_acc")
            body.append([
                e(r["model"]), e(r["probe"]), pct(r["accuracy"]),
                "&ndash;" if dacc is None else f"{100 * dacc:+.2f} pt", pct(r["asr"]),
                e(str(r["target"])), f"{r['n_poisoned']} / {r['n_train']}", *cells,
                f"{num(r.get('ac_precision'))} / {num(r.get('ac_recall'))}",
            ])  # fmt: skip
        parts = [note, table(head, body, num_cols=[2, 3, 4, 7, 8, 9])]
        if data.get("hists"):
            parts.append(f"<figure>{_plot(data['hists'])}<figcaption>Defence scores in the "
                         "target class, poisoned vs clean training examples.</figcaption>"
                         "</figure>")  # fmt: skip
        return "\n".join(parts)


def _plot(hists: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(hists), width=4.2, height=3.2)
        for ax, h in zip(axes, hists, strict=True):
            both = np.r_[h["poisoned"], h["clean"]]
            bins = np.linspace(float(both.min()), float(both.max()) + 1e-12, 31)
            ax.hist(h["clean"], bins=bins, alpha=0.6, label="clean", density=True)
            ax.hist(h["poisoned"], bins=bins, alpha=0.6, label="poisoned", density=True)
            ax.set_title(f"{h['model']} ({h['probe']}): {h['defence']}")
            ax.set_xlabel("score (higher = more suspicious)")
            ax.legend(fontsize=8)
        return plots._svg(fig)
