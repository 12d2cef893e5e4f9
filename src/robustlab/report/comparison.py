"""Comparison section of a report built for two or more runs (``robustlab report RUN_A RUN_B ...``).

Every later run is compared with the first (the baseline) by :func:`robustlab.metrics.compare`:
``B - A`` per (model,) kind, probe, level and metric with a 95% bootstrap CI (paired where the runs
hold the same examples), a permutation p-value and Benjamini-Hochberg FDR control (5 %) over all
rows of one comparison (Benjamini & Hochberg, 1995), the longitudinal view of "Robustness over
time" (S32). Diagnosis records are left out as in the report's accuracy tables.

Example::

    from robustlab.report.comparison import comparison

    data = comparison(store, ["run-a", "run-b"])  # {"baseline": "run-a", "pairs": [...]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.report.format import MISSING, e, level, num, table


def comparison(
    store: Any, run_ids: Sequence[str], metrics: Sequence[str] = ("accuracy",)
) -> dict[str, Any]:
    """B - A rows of every run in ``run_ids[1:]`` against ``run_ids[0]`` (JSON-able, NaN kept as
    float NaN: the report's JSON cleaning turns it into None)."""
    from robustlab.core.records import without_diagnoses
    from robustlab.metrics import compare

    ids = list(dict.fromkeys(run_ids))
    if len(ids) < 2:
        raise ConfigError("a comparison needs two or more different runs")
    base = without_diagnoses(store.records(ids[0]))
    pairs = []
    for other in ids[1:]:
        try:
            df = compare(base, without_diagnoses(store.records(other)), list(metrics))
        except ConfigError as exc:
            raise ConfigError(f"cannot compare run {other} with {ids[0]}: {exc}") from None
        rows = df.to_dict(orient="records") if len(df) else []
        for r in rows:
            good = (r["diff"] > 0) == bool(r["higher_is_better"])
            r["verdict"] = (r["status"] if r["status"] != "ok" else
                            ("better" if good else "worse") if r["significant"] else "n.s.")  # fmt: skip
            r["significant"] = bool(r["significant"])
            r["higher_is_better"] = bool(r["higher_is_better"])
        tested = int(df["p_value"].notna().sum()) if len(df) else 0
        pairs.append({"a": ids[0], "b": other, "tested": tested, "rows": rows})
    return {"baseline": ids[0], "runs": ids, "pairs": pairs}


def render(data: dict[str, Any]) -> str:
    """One table per compared pair; significant rows marked better (green) or worse (red)."""
    parts = [
        '<p class="muted">B - A with a 95% bootstrap CI (paired where both runs hold the same '
        "examples); better/worse only where significant after Benjamini-Hochberg FDR control "
        "(5 %) over the rows of one comparison (q = adjusted permutation p-value); n.s. = not "
        "significant.</p>"
    ]
    for pair in data["pairs"]:
        rows = pair["rows"]
        per_model = bool(rows) and "model" in rows[0]
        head = [*(["model"] if per_model else []), "kind", "probe", "level", "metric", "A", "B",
                "B - A", "95% CI", "q", ""]  # fmt: skip
        body = []
        for r in rows:
            ci = MISSING if r["ci_lo"] is None else f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]"
            cls = {"better": "ok", "worse": "bad"}.get(r["verdict"], "muted")
            diff = MISSING if r["diff"] is None else f"{r['diff']:+.3f}"
            body.append([*([e(r["model"])] if per_model else []), e(r["kind"]), e(r["probe"]),
                         level(r["level"]), e(r["metric"]), num(r["a"]), num(r["b"]), diff, ci,
                         num(r["q_value"], 3), f'<span class="{cls}">{e(r["verdict"])}</span>'])  # fmt: skip
        n_worse = sum(r["verdict"] == "worse" for r in rows)
        n_better = sum(r["verdict"] == "better" for r in rows)
        start = len(head) - 8
        parts.append(
            f"<h3>B = {e(pair['b'])} vs A = {e(pair['a'])}</h3>"
            f"<p>{n_better} better, {n_worse} worse of {pair['tested']} tested rows.</p>"
            + table(head, body, num_cols=range(start, len(head) - 1))
        )
    return "\n".join(parts)
