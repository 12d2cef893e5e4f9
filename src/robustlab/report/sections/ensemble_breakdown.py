"""Report section: which member of an attack ensemble broke how many examples.

The AutoAttack-style ensemble (:mod:`robustlab.attacks.ensemble`, Croce & Hein, 2020) runs its
member attacks in sequence, each only on the examples still robust, and records per example the
index of the member that broke it (``x.member``; -1: none). Per model, ensemble probe and
epsilon, the section counts the examples misclassified before any attack ran, those each member
broke, those robust to all, and those the model failed on, as counts and shares (they add up to
the examples). Member names come from the probe's stored parameters (the ensemble's own
``members()``); where they cannot be rebuilt, members are shown as ``member k``.

Read it as: a member that breaks many examples early carries the ensemble; a late member (Square,
gradient-free) that still breaks examples points to gradient masking in the earlier ones.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, level, pct, table
from robustlab.report.sections._vision import model_order, plain, probe_specs


def member_names(spec: dict[str, Any] | None) -> list[str]:
    """The ensemble's member names in run order, from its stored spec ([] if not rebuilt)."""
    from robustlab.core.registry import attacks

    if not spec:
        return []
    with contextlib.suppress(Exception):
        ens = attacks.create(str(spec["name"]), dict(spec.get("params") or {}))
        return [str(name) for name, _ in ens.members()]
    return []


def outcomes(g: pd.DataFrame) -> dict[str, pd.Series]:
    """Masks of ``g``'s records by ensemble outcome: ``failed``, ``clean_wrong``, ``robust``,
    ``broken`` (broken by some member; ``member`` holds which, as numbers)."""
    failed = g["correct"].isna()
    cc = g["x.clean_correct"] if "x.clean_correct" in g else pd.Series(1.0, index=g.index)
    clean_ok = pd.to_numeric(cc, errors="coerce").fillna(0.0) == 1
    success = pd.to_numeric(g["x.success"], errors="coerce").fillna(0.0) == 1
    return {
        "failed": failed,
        "clean_wrong": ~failed & ~clean_ok,
        "robust": ~failed & clean_ok & ~success,
        "broken": ~failed & clean_ok & success,
        "member": pd.to_numeric(g["x.member"], errors="coerce"),
    }


def breakdown(g: pd.DataFrame, k: int) -> dict[str, Any]:
    """Counts for one (model, probe, level): clean errors, broken per member, robust, failed."""
    o = outcomes(g)
    broken, member = o["broken"], o["member"]
    n_members = max(k, int(member[broken].max()) + 1 if broken.any() else 0)
    return {
        "n": int(len(g)),
        "clean_wrong": int(o["clean_wrong"].sum()),
        "broken": [int((broken & (member == i)).sum()) for i in range(n_members)],
        "robust": int(o["robust"].sum()),
        "failed": int(o["failed"].sum()),
    }


@report_sections.register("ensemble_breakdown")
class EnsembleBreakdown:
    """Per attack ensemble: which member broke how many examples."""

    title = "Attack ensemble breakdown"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df or "x.member" not in df or "x.success" not in df:
            return None
        att = df[(df["kind"] == "attack") & pd.to_numeric(df["x.member"], errors="coerce").notna()]
        if att.empty:
            return None
        from robustlab.report.levels import axis_for, probe_axes

        specs, axes = probe_specs(info), probe_axes(info)
        order = {m: i for i, m in enumerate(model_order(info, att))}
        rows = []
        for (model, probe, lv), g in att.groupby(["model", "probe", "level"], sort=True):
            names = member_names(specs.get(str(probe)))
            b = breakdown(g, len(names))
            names += [f"member {i}" for i in range(len(names), len(b["broken"]))]
            rows.append({"model": str(model), "probe": str(probe), "level": float(lv),
                         "axis": axis_for(axes, "attack", str(probe)).label, "members": names,
                         **b})  # fmt: skip
        rows.sort(key=lambda r: (order.get(r["model"], len(order)), r["probe"], r["level"]))
        return plain({"rows": rows})

    def render(self, data: dict[str, Any]) -> str:
        parts = [
            "<p>Members run in order, each on the examples no earlier member broke; an example "
            "is counted under the first member that broke it.</p>"
        ]
        for probe in dict.fromkeys(r["probe"] for r in data["rows"]):
            rows = [r for r in data["rows"] if r["probe"] == probe]
            members = max((r["members"] for r in rows), key=len)

            def cell(c: int, n: int) -> str:
                return f"{c} ({pct(c / n)})" if n else str(c)

            body = [
                [e(r["model"]), level(r["level"]), str(r["n"]), cell(r["clean_wrong"], r["n"]),
                 *[cell(r["broken"][i], r["n"]) if i < len(r["broken"]) else "0" for i in range(len(members))],
                 cell(r["robust"], r["n"]), cell(r["failed"], r["n"])]
                for r in rows
            ]  # fmt: skip
            head = ["model", rows[0].get("axis") or "epsilon", "examples", "wrong before attack",
                    *[f"broken by {m}" for m in members], "robust to all", "failed"]  # fmt: skip
            parts.append(f"<h3>{e(probe)}</h3>")
            parts.append(table(head, body, num_cols=range(1, len(head))))
        return "\n".join(parts)
