"""Meaning preservation of text attacks and word-substitution perturbations (issue 18).

Built from records that carry the text constraints' columns (``x.constraints_pass``,
``x.constraint_violations``, ``x.edits``; written by the text attacks and by ``synonym`` /
``embedding_swap`` with their ``constraints`` on, see
:mod:`robustlab.perturbations.text.constraints`): per model, probe and level, the share of changed
examples that pass every constraint and how often each constraint is broken; then a sample of
edited texts, those that break constraints first and then the most edited, with their edits
highlighted (``<del>`` / ``<ins>``).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.perturbations.text.constraints import ORDER
from robustlab.report.format import e, pct, table

_EDIT = re.compile(r"\[-(.*?)-\]|\{\+(.*?)\+\}")
SAMPLE = 12


def highlight(marked: str) -> str:
    """HTML of a wdiff-marked text (``[-old-]{+new+}``): deletions in ``<del>``, insertions in
    ``<ins>``, everything escaped."""
    out, end = [], 0
    for m in _EDIT.finditer(marked):
        out.append(e(marked[end : m.start()]))
        out.append(f"<del>{e(m.group(1))}</del>" if m.group(1) is not None else "")
        out.append(f"<ins>{e(m.group(2))}</ins>" if m.group(2) is not None else "")
        end = m.end()
    out.append(e(marked[end:]))
    return "".join(out)


@report_sections.register("text_constraints")
class TextConstraintsSection:
    """Share of changed texts that keep their meaning by the constraints, and sample edits."""

    title = "Text edits: meaning-preservation constraints"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        col = "x.constraints_pass"
        if col not in df or df[col].notna().sum() == 0:
            return None
        d = df[df[col].notna()].copy()
        d["_pass"] = d[col].astype(float)
        viol = d.get("x.constraint_violations", pd.Series("", index=d.index)).fillna("")
        rows = []
        for (model, kind, probe, level), g in d.groupby(
            ["model", "kind", "probe", "level"], sort=False
        ):
            v = viol[g.index]
            rows.append(
                {
                    "model": str(model),
                    "kind": str(kind),
                    "probe": str(probe),
                    "level": float(level),
                    "changed": len(g),
                    "pass": float(g["_pass"].mean()),
                    **{c: int(v.str.split(",").apply(lambda s, c=c: c in s).sum()) for c in ORDER},
                }
            )
        edits = d.get("x.edits", pd.Series(None, index=d.index)).fillna("")
        d["_n_edits"] = edits.str.count(r"\[-") + edits.str.count(r"\{\+")
        d = d.sort_values(
            ["_pass", "_n_edits", "probe"], ascending=[True, False, True], kind="stable"
        )
        sample = [
            {
                "probe": str(r["probe"]),
                "level": float(r["level"]),
                "example_id": r.get("example_id"),
                "violations": str(viol[i]),
                "edits": str(edits[i]),
            }
            for i, r in d.head(SAMPLE).iterrows()
        ]
        return {"rows": rows, "sample": sample}

    def render(self, data: dict[str, Any]) -> str:
        head = ("model", "kind", "probe", "level", "changed", "pass", *ORDER)
        body = [
            [e(r["model"]), e(r["kind"]), e(r["probe"]), f"{r['level']:g}", str(r["changed"]),
             pct(r["pass"]), *(str(r[c]) for c in ORDER)]
            for r in data["rows"]
        ]  # fmt: skip
        sample = [
            [e(s["probe"]), f"{s['level']:g}", e(str(s["example_id"])),
             e(s["violations"] or "none"), highlight(s["edits"])]
            for s in data["sample"]
        ]  # fmt: skip
        return "\n".join(
            [
                "<p>Changed examples only. <em>pass</em>: share with no broken constraint; the "
                "counts are examples breaking each one (entity: a named entity edited; number: a "
                "number edited; pos: a substituted word tagged differently in context; sense: a "
                "WordNet synonym only through a rare, untagged sense; similarity: MiniLM cosine "
                "to the original below the threshold).</p>",
                table(head, body, range(4, len(head))),
                "<p>Sample of edited texts, those breaking constraints first, then the most "
                "edited (<del>removed</del> <ins>inserted</ins>):</p>",
                table(("probe", "level", "example", "broken", "text"), sample, range(1, 2)),
            ]
        )
