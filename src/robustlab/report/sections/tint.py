"""Report section: noisy chains of thought (TInt) -- answer accuracy against contamination, one
curve per noise type (records of ``tint`` diagnosis probes, :mod:`robustlab.diagnose.tint`).

Per (model, probe, contamination): accuracy (exact match of the final integer) with its 95%
Clopper-Pearson interval, the share of completions without an integer,
errors, and the mean number of noised demonstration steps; the same per function when the data
mixes functions (up to :data:`MAX_FUNCTIONS`). Where a static and a dynamic probe of the same
intensity and unit share a level, their examples see the same noised positions, so the section
also gives the paired difference dynamic - static (paired bootstrap, 95%). The suite's clean
evaluation (records of kind ``clean`` on noise-free tint data) is drawn as contamination 0 of
curves that lack it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import ci, e, num, pct, pp, table
from robustlab.report.format import level as fmt_level
from robustlab.report.sections import diagnosis_probes, diagnosis_records

NAME = "tint"
MAX_FUNCTIONS = 6  # per-function curves up to this many functions
XLABEL = "contamination"


def _acc(g: pd.DataFrame) -> dict[str, Any]:
    """Accuracy of the scored (non-error) records of ``g`` with its exact (Clopper-Pearson)
    binomial interval: beta quantiles via ``scipy.special.betaincinv`` (``scipy.stats`` costs
    seconds to import)."""
    from scipy.special import betaincinv

    ok = g["correct"].dropna()
    n, k = len(ok), int(ok.sum())
    if n == 0:
        return {"n": 0, "accuracy": None, "accuracy_lo": None, "accuracy_hi": None}
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, 0.025))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 0.975))
    return {"n": n, "accuracy": k / n, "accuracy_lo": lo, "accuracy_hi": hi}


def _rows(
    df: pd.DataFrame, probes: dict[str, dict[str, Any]], by: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for key, g in df.groupby(["model", "probe", *by, "level"], sort=True):
        model, probe, *rest, level = key
        answer = g["x.answer"] if "x.answer" in g else pd.Series(np.nan, index=g.index)
        scored = g["correct"].notna()
        row = {"model": str(model), "probe": str(probe), "level": float(level),
               "noise": str(probes.get(str(probe), {}).get("noise", "static")),
               **dict(zip(by, map(str, rest), strict=True)), **_acc(g),
               "errors": int((~scored).sum()),
               "no_integer": float(answer[scored].isna().mean()) if scored.any() else None,
               "noised_steps": float(pd.to_numeric(g.get("m.noised_steps")).mean())
               if "m.noised_steps" in g else None}  # fmt: skip
        rows.append(row)
    return rows


def _paired(df: pd.DataFrame, probes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """dynamic - static accuracy on the same examples and level, per model and probe pair."""
    from robustlab.metrics.base import paired_bootstrap_diff

    def setting(p: dict[str, Any]) -> tuple[Any, ...]:
        return (p.get("intensity"), p.get("unit"))

    pairs = [
        (s, d)
        for s, ps in probes.items()
        for d, pd_ in probes.items()
        if ps.get("noise", "static") == "static"
        and pd_.get("noise") == "dynamic"
        and setting(ps) == setting(pd_)
    ]
    out = []
    for s, d in pairs:
        for (model, level), g in df[df["probe"].isin([s, d])].groupby(["model", "level"]):
            wide = g.pivot_table(index="example_id", columns="probe", values="correct",
                                 aggfunc="first", dropna=False)  # fmt: skip
            if s not in wide or d not in wide:
                continue
            wide = wide[[s, d]].dropna()
            if wide.empty:
                continue
            diff, lo, hi = paired_bootstrap_diff(wide[s].to_numpy(), wide[d].to_numpy())
            out.append({"model": str(model), "static": s, "dynamic": d, "level": float(level),
                        "n": len(wide), "diff": diff, "lo": lo, "hi": hi})  # fmt: skip
    return out


def _clean(df: pd.DataFrame) -> dict[str, float]:
    """Clean accuracy per model on noise-free tint data (the suite's clean probe)."""
    if "m.noise" not in df:
        return {}
    c = df[(df["kind"] == "clean") & (df["m.noise"] == "none")]
    return {str(m): r["accuracy"] for m, g in c.groupby("model") if (r := _acc(g))["n"]}


@report_sections.register("tint")
class TInt:
    """Noisy chains of thought (TInt): answer accuracy vs contamination per noise type."""

    title = "Noisy chains of thought (TInt)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        probes = diagnosis_probes(info, NAME)
        d = diagnosis_records(df, info, NAME)
        if d.empty:
            return None
        rows = _rows(d, probes, [])
        functions = sorted(d["m.function"].dropna().unique()) if "m.function" in d else []
        per_fn = _rows(d, probes, ["m.function"]) if 1 < len(functions) <= MAX_FUNCTIONS else []
        for r in per_fn:
            r["function"] = r.pop("m.function")
        models = list(dict.fromkeys(str(m) for m in d["model"]))
        return {"rows": rows, "functions": per_fn, "paired": _paired(d, probes),
                "clean": _clean(df), "models": models}  # fmt: skip

    def render(self, data: dict[str, Any]) -> str:
        from robustlab.report import plots

        rows, clean, models = data["rows"], data.get("clean") or {}, data["models"]
        parts = [
            "<p>Few-shot prompts whose demonstrations' traces carry <b>static</b> noise (a shown "
            "step result changed, later steps and the answer clean) or <b>dynamic</b> noise (the "
            "error propagates to the later steps and the answer); contamination = the share of "
            "demonstration steps (or demonstrations) noised. Accuracy = the completion's final "
            "integer equals the query's clean answer; 95% Clopper-Pearson intervals.</p>",
            "<figure>"
            + plots.curves(rows, models, clean, XLABEL, "accuracy vs contamination")
            + "</figure>",
        ]
        head = ["model", "probe", "noise", XLABEL, "accuracy [95% CI]", "n", "no integer",
                "errors", "noised steps / prompt"]  # fmt: skip
        body = [
            [e(r["model"]), e(r["probe"]), e(r["noise"]), fmt_level(r["level"]),
             ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]), num(r["n"], 0),
             pct(r["no_integer"]), num(r["errors"], 0), num(r["noised_steps"], 2)]
            for r in rows
        ]  # fmt: skip
        parts.append(table(head, body, num_cols=[3, 4, 5, 6, 7, 8]))
        if data.get("paired"):
            head = ["model", "static", "dynamic", XLABEL, "dynamic - static [95% CI]", "pairs"]
            body = [
                [e(p["model"]), e(p["static"]), e(p["dynamic"]), fmt_level(p["level"]),
                 f"{pp(p['diff'], signed=True)} <span class=ci>[{pp(p['lo'], signed=True)}, "
                 f"{pp(p['hi'], signed=True)}]</span>", num(p["n"], 0)]
                for p in data["paired"]
            ]  # fmt: skip
            parts.append("<h3>Static vs dynamic on the same noised positions</h3>")
            parts.append(table(head, body, num_cols=[3, 4, 5]))
        if data.get("functions"):
            fn_rows = [{**r, "model": f"{r['model']} · {r['function']}"} for r in data["functions"]]
            panels = list(dict.fromkeys(r["model"] for r in fn_rows))
            parts.append("<h3>Per function</h3>")
            parts.append(
                "<figure>"
                + plots.curves(
                    fn_rows, panels, {}, XLABEL, "accuracy vs contamination per function"
                )
                + "</figure>"
            )
        return "\n".join(parts)
