"""Report section: mean corruption error (mCE) and relative mCE against a baseline model
(Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019).

For a model ``f`` and a corruption ``c`` (a perturbation probe) at severities ``s`` (its levels)::

    CE_c     = sum_s E(f, s, c) / sum_s E(base, s, c)
    relCE_c  = sum_s (E(f, s, c) - E(f, clean)) / sum_s (E(base, s, c) - E(base, clean))
    mCE      = mean_c CE_c,   relative mCE = mean_c relCE_c

with ``E`` the top-1 error (failed examples count as errors), summed over the severities both
models have. The **baseline is the first model listed in the suite** (list the reference model,
AlexNet in the paper, first); its own mCE is 100% by definition. Replicates are pooled. A
corruption where the baseline makes no error (CE undefined) or is not worse than clean (relative
CE undefined) is shown as a dash, and the mean over corruptions is then a dash too.

Shown when a run has two or more models with clean and perturbation records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.core.registry import report_sections
from robustlab.report.format import e, pct, table
from robustlab.report.sections._vision import accuracy, model_order, plain


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@report_sections.register("mce")
class CorruptionError:
    """mCE and relative mCE per model against the suite's first model, per corruption and mean."""

    title = "Corruption error (mCE)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        from robustlab.metrics.vision import corruption_errors, mce

        if df.empty or "kind" not in df:
            return None
        sub = df[df["kind"].isin(("clean", "perturbation"))]
        has = sub.groupby("model")["kind"].agg(lambda k: {"clean", "perturbation"} <= set(k))
        models = [m for m in model_order(info, sub) if bool(has.get(m, False))]
        if len(models) < 2:
            return None
        base = models[0]
        frames = {m: sub[sub["model"] == m] for m in models}
        base_err = corruption_errors(frames[base])
        corruptions = [str(c) for c in dict.fromkeys(base_err["probe"])]
        # relative CE_c is defined where the baseline is worse on c than on clean data
        base_clean = 1.0 - accuracy(frames[base][frames[base]["kind"] == "clean"])
        degraded = (base_err["error"] - base_clean).groupby(base_err["probe"]).sum() > 0
        rows = []
        for m in models:
            try:
                with np.errstate(all="ignore"):
                    res = mce(frames[m], frames[base])
            except ConfigError:  # no corruption and severity in common with the baseline
                continue
            per = res["per_corruption"]
            errs = corruption_errors(frames[m]).groupby("probe")["error"].mean()
            ce = {str(c): _finite(per.loc[c, "ce"]) for c in per.index}
            rel = {
                str(c): _finite(per.loc[c, "rel_ce"]) if bool(degraded.get(c, False)) else None
                for c in per.index
            }
            clean = frames[m][frames[m]["kind"] == "clean"]
            rows.append(
                {
                    "model": m, "baseline": m == base, "clean_error": 1.0 - accuracy(clean),
                    "corruption_error": float(errs.mean()),
                    "mce": _finite(res["mce"]) if None not in ce.values() else None,
                    "relative_mce": _finite(res["relative_mce"]) if None not in rel.values() else None,
                    "ce": ce, "rel_ce": rel, "errors": {str(k): float(v) for k, v in errs.items()},
                }
            )  # fmt: skip
        if len(rows) < 2:
            return None
        return plain({"baseline": base, "corruptions": corruptions, "rows": rows})

    def render(self, data: dict[str, Any]) -> str:
        rows, cs = data["rows"], data["corruptions"]
        base = e(data["baseline"])
        head = ["model", "clean error", "mean corruption error", "mCE", "relative mCE"]
        body = [
            [e(r["model"]) + (" (baseline)" if r["baseline"] else ""), pct(r["clean_error"]),
             pct(r["corruption_error"]), pct(r["mce"]), pct(r["relative_mce"])]
            for r in rows
        ]  # fmt: skip
        per_head = ["model", *[f"{c}: CE (rel. CE)" for c in cs]]
        per_body = [
            [e(r["model"]), *[f"{pct(r['ce'].get(c))} ({pct(r['rel_ce'].get(c))})" for c in cs]]
            for r in rows
        ]
        note = (
            f"<p>Baseline: <b>{base}</b>, the first model of the suite (Hendrycks &amp; "
            "Dietterich, 2019). CE<sub>c</sub> = &Sigma;<sub>s</sub> E<sub>s,c</sub> / "
            "&Sigma;<sub>s</sub> E<sup>base</sup><sub>s,c</sub>; relative CE subtracts each "
            "model's clean error first; mCE is the mean over corruptions (probes) of the "
            "severities both models have. Lower is better; 100% = as the baseline.</p>"
        )
        return (
            note
            + table(head, body, num_cols=range(1, 5))
            + table(per_head, per_body, num_cols=range(1, len(cs) + 1))
        )
