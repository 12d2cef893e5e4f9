"""Report section: the verification sandwich ``IBP-certified <= exact <= accuracy under attack``.

For each model and each Linf epsilon that has records from the ``ibp`` and/or ``milp`` certifiers
(certifier records at that level: ``correct = pred == label and radius >= level``) and from Linf
attacks at the same epsilon, the section shows IBP-certified accuracy (a lower bound on robust
accuracy), exact robust accuracy by MILP (with its solver time-outs, which count as not robust),
the lowest accuracy under attack (an upper bound) and the gap between what certificates and attacks
can decide. A row where a lower bound exceeds an upper bound is flagged: it means a bug.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, pct, table
from robustlab.report.format import level as fmt_level

CERTIFIERS = ("ibp", "milp")


def _probe_names(info: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Probe display label -> (kind, registered name, norm), from the run's suite."""
    out = {}
    for p in (info.get("suite") or {}).get("probes", []):
        label = p.get("label") or p["name"]
        if p["kind"] == "attack" and p.get("norm", "inf") != "inf" and not p.get("label"):
            label = f"{p['name']}-l{p['norm']}"
        out[label] = (p["kind"], p["name"], str(p.get("norm", "inf")))
    return out


def _rows(df: pd.DataFrame, info: dict[str, Any]) -> list[dict[str, Any]]:
    from robustlab.report.levels import Axis, probe_axes

    names = _probe_names(info)
    kind_name = df["probe"].map(lambda p: names.get(p, ("", "", ""))[:2])
    certs = df[(df["kind"] == "certifier") & kind_name.map(lambda k: k[1] in CERTIFIERS)]
    # attacks whose levels are L-inf epsilons (not patch areas, edit rates, ...): upper bounds
    axes = probe_axes(info)
    linf = {
        p
        for p, (k, _, _) in names.items()
        if k == "attack" and axes.get(p) == Axis("epsilon", "inf")
    }
    attacks = df[(df["kind"] == "attack") & df["probe"].isin(linf)]
    if certs.empty or attacks.empty:
        return []
    certs = certs.assign(cert=kind_name[certs.index].map(lambda k: k[1]))
    out = []
    for (model, level), g in certs.groupby(["model", "level"], sort=True):
        att = attacks[(attacks["model"] == model) & (attacks["level"] == level)]
        if att.empty:
            continue
        acc = {c: float(h.groupby("probe")["correct"].mean().max()) for c, h in g.groupby("cert")}
        per_attack = att.groupby("probe")["correct"].mean()
        milp = g[g["cert"] == "milp"]
        timeouts = (
            int(pd.to_numeric(milp["x.milp_status"]).eq(2).sum()) if "x.milp_status" in milp else 0
        )
        row = {
            "model": str(model), "eps": float(level), "ibp": acc.get("ibp"),
            "milp": acc.get("milp"), "timeouts": timeouts, "attack": float(per_attack.min()),
            "attack_name": str(per_attack.idxmin()), "n": int(att.groupby("probe").size().max()),
        }  # fmt: skip
        lower = max(v for v in (row["ibp"], row["milp"]) if v is not None)
        ordered = row["ibp"] is None or row["milp"] is None or row["ibp"] <= row["milp"] + 1e-12
        row["gap"] = row["attack"] - lower
        row["violated"] = not ordered or lower > row["attack"] + 1e-12
        out.append(row)
    return out


@report_sections.register("verification")
class Verification:
    """IBP-certified <= exact (MILP) <= attacked accuracy per Linf epsilon."""

    title = "Verification sandwich"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df or not (df["kind"] == "certifier").any():
            return None
        rows = _rows(df, info)
        return {"rows": rows} if rows else None

    def render(self, data: dict[str, Any]) -> str:
        def opt(v: Any) -> str:
            return "—" if v is None else pct(v)

        body = [
            [e(r["model"]), fmt_level(r["eps"]), opt(r["ibp"]),
             opt(r["milp"]) + (f" ({r['timeouts']} time-outs)" if r["timeouts"] else ""),
             f"{pct(r['attack'])} ({e(r['attack_name'])})", pct(r["gap"]),
             "VIOLATED: a bound is wrong" if r["violated"] else "ok"]
            for r in data["rows"]
        ]  # fmt: skip
        head = ["model", "epsilon (L∞)", "IBP-certified", "exact (MILP)", "under attack", "gap",
                "order"]  # fmt: skip
        note = (
            "<p>Certified accuracies are lower bounds on robust accuracy, accuracy under attack "
            "an upper bound; the gap is what neither side decides.</p>"
        )
        return note + table(head, body, num_cols=[1, 2, 3, 4, 5])
