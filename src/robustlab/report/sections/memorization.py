"""Report sections for S28 (``memorization``: IPR pruning of memorising neurons, weight decay) and
S45 (``capability-probe``: old capability probed, pruned and revived after fine-tuning).

Both read the records of their diagnosis probes (``kind == "diagnosis"``, the probe's registered
name from ``info["suite"]["probes"]``); every number is a mean over the stored per-example
records (:mod:`robustlab.diagnose.memorization`, :mod:`robustlab.diagnose.capability_probe`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, num, pct, table
from robustlab.report.sections import diagnosis_records


def _records(df: pd.DataFrame, info: dict[str, Any], name: str) -> pd.DataFrame | None:
    sel = diagnosis_records(df, info, name)
    return sel if len(sel) and "x.role" in sel else None


def _mean(s: pd.Series) -> float | None:
    v = pd.to_numeric(s, errors="coerce").astype(float).to_numpy()
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def _flag(s: pd.Series) -> np.ndarray:
    return s.map(lambda v: v is True or v == 1 or v == "true").to_numpy(bool)


def model_param(info: dict[str, Any], model: str, key: str) -> Any:
    """A suite model's parameter ``key`` by its display name (label or name), or None."""
    for m in (info.get("suite") or {}).get("models") or []:
        if isinstance(m, dict) and str(m.get("label") or m.get("name")) == model:
            return (m.get("params") or {}).get(key)
    return None


@report_sections.register("memorization")
class MemorizationSection:
    """S28: accuracy on corrupted vs clean training labels and on test, vs neurons pruned by IPR
    and vs weight decay."""

    title = "Memorisation: IPR pruning of memorising neurons (S28)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        d = _records(df, info, "memorization")
        if d is None:
            return None
        rows = []
        for (model, probe, level), g in d.groupby(["model", "probe", "level"], sort=True):
            tr, te = g[g["x.role"] == "train"], g[g["x.role"] == "test"]
            corr = _flag(tr["m.corrupted"]) if "m.corrupted" in tr else np.zeros(len(tr), bool)
            row: dict[str, Any] = {
                "model": str(model), "probe": str(probe), "level": float(level),
                "weight_decay": model_param(info, str(model), "weight_decay"),
                "pruned": int(pd.to_numeric(g["x.pruned"]).iloc[0]),
                "ipr_cut": _mean(g["x.ipr_cut"]), "ipr_mean": _mean(g["x.ipr_mean"]),
                "n_corrupted": int(corr.sum()), "n_clean": int((~corr).sum()), "n_test": len(te),
            }  # fmt: skip
            for suffix, col, true_col in (("", "correct", "x.true_correct"),
                                          ("_before", "x.correct_before", "x.true_correct_before")):  # fmt: skip
                row["corrupted_fit" + suffix] = _mean(tr[col][corr]) if corr.any() else None
                row["corrupted_true" + suffix] = _mean(tr[true_col][corr]) if corr.any() else None
                row["clean" + suffix] = _mean(tr[col][~corr]) if (~corr).any() else None
                row["test" + suffix] = _mean(te[col]) if len(te) else None
            rows.append(row)
        return {"rows": rows} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]
        note = (
            "<p>Neurons of the first hidden layer are ranked by the inverse participation ratio "
            "(IPR, r = 2) of their input weights' Fourier power; the fraction on the level axis "
            "with the lowest IPR (memorising, Doshi et al. 2024) is pruned. <i>corrupted fit</i>: "
            "share of corrupted training examples still predicted with their corrupted label; "
            "<i>corrupted true</i>: predicted with the true result; <i>clean</i>: clean training "
            "examples right; <i>test</i>: held-out pairs right.</p>"
        )
        head = ["model", "probe", "pruned", "neurons", "IPR cut", "corrupted fit",
                "corrupted true", "clean train", "test"]  # fmt: skip
        body = [
            [e(r["model"]), e(r["probe"]), pct(r["level"]), str(r["pruned"]), num(r["ipr_cut"]),
             pct(r["corrupted_fit"]), pct(r["corrupted_true"]), pct(r["clean"]), pct(r["test"])]
            for r in rows
        ]  # fmt: skip
        parts = [note, f"<figure>{_prune_plot(rows)}</figure>",
                 table(head, body, num_cols=[2, 3, 4, 5, 6, 7, 8])]  # fmt: skip
        wd = _wd_rows(rows)
        if len(wd) >= 2:
            parts.append("<h3>Effect of weight decay (unpruned models)</h3>")
            parts.append(f"<figure>{_wd_plot(wd)}</figure>")
            parts.append(table(
                ["model", "weight decay", "corrupted fit", "corrupted true", "clean train",
                 "test", "mean IPR"],
                [[e(r["model"]), num(r["weight_decay"]), pct(r["corrupted_fit_before"]),
                  pct(r["corrupted_true_before"]), pct(r["clean_before"]), pct(r["test_before"]),
                  num(r["ipr_mean"])] for r in wd],
                num_cols=[1, 2, 3, 4, 5, 6],
            ))  # fmt: skip
        return "\n".join(parts)


def _wd_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model with a numeric weight decay (its unpruned numbers), by weight decay."""
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        w = r["weight_decay"]
        if isinstance(w, int | float) and r["model"] not in first:
            first[r["model"]] = r
    return sorted(first.values(), key=lambda r: float(r["weight_decay"]))


SERIES = (("corrupted_fit", "corrupted fit"), ("corrupted_true", "corrupted true"),
          ("clean", "clean train"), ("test", "test"))  # fmt: skip


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _prune_plot(rows: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    keys = list(dict.fromkeys((r["model"], r["probe"]) for r in rows))
    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(keys), 4.2, 3.2, cols=3, sharey=False)
        for ax, (model, probe) in zip(axes, keys, strict=False):
            mine = [r for r in rows if (r["model"], r["probe"]) == (model, probe)]
            xs = [r["level"] for r in mine]
            for i, (key, label) in enumerate(SERIES):
                ax.plot(xs, [_nan(r[key]) for r in mine], marker=plots._MARKERS[i], label=label,
                        clip_on=False, zorder=3)  # fmt: skip
            ax.set_title(f"{model} ({probe})")
            plots.finish_axes(ax, xs, "fraction of neurons pruned")
        axes[0].legend(fontsize=8)
        return plots._svg(fig)


def _wd_plot(rows: list[dict[str, Any]]) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        fig = Figure(figsize=(6.0, 3.4), layout="constrained")
        ax = fig.subplots()
        xs = [float(r["weight_decay"]) for r in rows]
        for i, (key, label) in enumerate(SERIES):  # dashed, hollow: equal series stay visible
            ax.plot(xs, [_nan(r[key + "_before"]) for r in rows], marker=plots._MARKERS[i],
                    label=label, clip_on=False, zorder=10 - i, linestyle=("-", "--")[i % 2],
                    fillstyle="none" if i == 0 else "full", markersize=9 if i == 0 else 5)  # fmt: skip
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(xs, [num(x) for x in xs], minor=False)
        ax.minorticks_off()
        ax.set_ylim(-0.04, 1.04)
        ax.set_xlabel("weight decay (AdamW)")
        ax.set_title("unpruned models: accuracy vs weight decay")
        ax.legend(fontsize=8)
        return plots._svg(fig)


def _model_order(info: dict[str, Any]) -> list[str]:
    """The suite's model display names, in suite order."""
    models = (info.get("suite") or {}).get("models") or []
    return [str(m.get("label") or m.get("name")) for m in models if isinstance(m, dict)]


@report_sections.register("capability-probe")
class CapabilityProbeSection:
    """S45: old-capability output and linear-probe accuracy per layer, as given, pruned, revived
    after k steps and from scratch: removed or wrapped."""

    title = "Fine-tuning: capability removed or wrapped (S45)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        d = _records(df, info, "capability-probe")
        if d is None:
            return None
        layers = sorted(c[len("x.probe_") : -len("_correct")] for c in d.columns
                        if c.startswith("x.probe_") and c.endswith("_correct"))  # fmt: skip
        rows = []
        order = {m: i for i, m in enumerate(_model_order(info))}
        groups = sorted(d.groupby(["model", "probe"], sort=False),
                        key=lambda kv: order.get(str(kv[0][0]), len(order)))  # fmt: skip
        for (model, probe), g in groups:
            for stage in dict.fromkeys(g["x.role"]):
                s = g[g["x.role"] == stage]
                rows.append({
                    "model": str(model), "probe": str(probe), "stage": str(stage), "n": len(s),
                    "output": _mean(s["correct"]),
                    "probes": {ly: _mean(s[f"x.probe_{ly}_correct"]) for ly in layers},
                })  # fmt: skip
        return {"rows": rows, "layers": layers} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        rows, layers = data["rows"], data["layers"]
        note = (
            "<p>Accuracy on the <b>old</b> task: the model's output, and a linear (ridge) probe "
            "of each hidden layer fitted on the old task's fit split. <i>model</i>: as given; "
            "<i>pruned</i>: the neurons most important to the new task removed; "
            "<i>revive-k</i>: after k steps of re-training on the old task; <i>scratch-k</i>: the "
            "same architecture trained k steps from a fresh initialisation. High probe accuracy "
            "with low output accuracy and a fast revival (revive-k far above scratch-k) means the "
            "capability was wrapped, not removed (Jain et al. 2024).</p>"
        )
        head = ["model", "probe", "stage", "output (old task)",
                *[f"probe {ly}" for ly in layers], "examples"]  # fmt: skip
        body = [
            [e(r["model"]), e(r["probe"]), e(r["stage"]), pct(r["output"]),
             *[pct(r["probes"].get(ly)) for ly in layers], str(r["n"])]
            for r in rows
        ]  # fmt: skip
        cols = list(range(3, 4 + len(layers) + 1))
        return "\n".join([note, f"<figure>{_stage_plot(rows, layers)}</figure>",
                          table(head, body, num_cols=cols)])  # fmt: skip


def _stage_plot(rows: list[dict[str, Any]], layers: list[str]) -> str:
    import matplotlib

    from robustlab.report import plots

    keys = list(dict.fromkeys((r["model"], r["probe"]) for r in rows))
    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(keys), 4.4, 3.4, cols=3, sharey=False)
        for ax, (model, probe) in zip(axes, keys, strict=False):
            mine = [r for r in rows if (r["model"], r["probe"]) == (model, probe)]
            stages = [r["stage"] for r in mine]
            xs = np.arange(len(stages))
            series = [("output", [_nan(r["output"]) for r in mine])]
            series += [(f"probe {ly}", [_nan(r["probes"].get(ly)) for r in mine]) for ly in layers]
            width = 0.8 / len(series)
            for i, (label, ys) in enumerate(series):
                ax.bar(xs + (i - (len(series) - 1) / 2) * width, ys, width, label=label)
            ax.set_xticks(xs, stages, rotation=30, ha="right")
            ax.set_ylim(0, 1.04)
            ax.set_title(f"{model} ({probe})")
        axes[0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.08), ncols=3)
        return plots._svg(fig)
