"""The S1 table: five robustness tasks side by side for each ranker (Wu et al., 2022, Table 1 style).

Columns, all from records of the ranking task (``x.rr`` etc.):

1. **i.i.d. variance** -- clean MRR@10 with a bootstrap 95% CI over queries and the standard deviation
   across training seeds (replicates);
2. **OOD query shift** -- mean relative MRR drop over query perturbations and query evaluation sets;
3. **OOD document shift** -- relative MRR drop on evaluation sets over another corpus (an evalset
   whose ``data.params.domain`` differs from the suite's);
4. **adversarial query attack** -- success rate (relevant document pushed out of the top-k) at the
   largest budget, with the mean rank change;
5. **adversarial document attack** -- success rate (target document promoted into the top-k) at the
   largest budget, per attack (black-box / white-box).

The most robust ranker of each column is marked in bold. A detail table lists every probe and level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.metrics.base import bootstrap_ci
from robustlab.metrics.ranking import relative_drop
from robustlab.report.format import e, num, pct, table
from robustlab.report.format import level as fmt_level

TASKS = ("iid", "ood_query", "ood_doc", "adv_query", "adv_doc")
HEAD = ("ranker", "1 i.i.d.: MRR@10 [95% CI]; seed sd", "2 OOD query: rel. drop",
        "3 OOD doc: rel. drop", "4 query attack: success", "5 doc attack: success")  # fmt: skip


def _mean(df: pd.DataFrame, col: str) -> float:
    v = pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(dtype=float)
    return float(v.mean()) if v.notna().any() else float("nan")


def _doc_attacks(info: dict[str, Any]) -> set[str]:
    """Labels of the suite's attack probes whose attack targets documents (``target``)."""
    from robustlab.core.registry import attacks

    out = set()
    for p in (info.get("suite", {}) or {}).get("probes", []) or []:
        kind_ok = p.get("kind") == "attack" and p["name"] in attacks
        if kind_ok and getattr(attacks.get(p["name"]), "target", "query") == "document":
            out.add(p.get("label") or p["name"])
    return out


def _doc_shift_probes(info: dict[str, Any]) -> set[str]:
    suite = info.get("suite", {}) or {}
    base = ((suite.get("data") or {}).get("params") or {}).get("domain", "in")
    out = set()
    for p in suite.get("probes", []) or []:
        if p.get("kind") == "evalset":
            dom = ((p.get("data") or {}).get("params") or {}).get("domain", "in")
            if dom != base:
                out.add(p.get("label") or p["name"])
    return out


def _level(d: dict[str, Any]) -> str:
    """A probe level with its meaning (edit rate, edited words, ...); none for evaluation sets."""
    if d["kind"] == "evalset":
        return "&ndash;"
    axis = d.get("axis")
    return fmt_level(d["level"]) + (f" <span class=ci>{e(axis)}</span>" if axis else "")


@report_sections.register("ranking")
class RankingSection:
    title = "Ranking robustness (S1: five tasks)"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if "x.rr" not in df or not len(df):
            return None
        from robustlab.report.levels import axis_for, probe_axes

        doc_shift, doc_attacks = _doc_shift_probes(info), _doc_attacks(info)
        axes = probe_axes(info)
        rows, detail = [], []
        for model, m in df.groupby("model", sort=False):
            clean = m[m["kind"] == "clean"]
            rr = pd.to_numeric(clean["x.rr"], errors="coerce").to_numpy(dtype=float)
            base = float(np.nanmean(rr)) if np.isfinite(rr).any() else float("nan")
            lo, hi = bootstrap_ci(rr)
            by_rep = clean.groupby("replicate")["x.rr"].mean()
            row: dict[str, Any] = {"model": model, "iid": base, "iid_lo": lo, "iid_hi": hi,
                                   "seed_sd": float(by_rep.std()) if len(by_rep) > 1 else None}  # fmt: skip
            shifts: dict[str, list[float]] = {"ood_query": [], "ood_doc": []}
            adv: dict[str, dict[str, tuple[float, float]]] = {"adv_query": {}, "adv_doc": {}}
            for (probe, kind, level), g in m[m["kind"] != "clean"].groupby(
                ["probe", "kind", "level"], sort=False
            ):
                mrr = _mean(g, "x.rr")
                ok = (  # no attack in the run: no clean_correct column, no attacked examples
                    g[pd.to_numeric(g["x.clean_correct"], errors="coerce") == 1]
                    if "x.clean_correct" in g
                    else g.iloc[:0]
                )
                asr = _mean(ok, "x.success") if kind == "attack" else float("nan")
                axis = "" if kind == "evalset" else axis_for(axes, kind, probe).label
                detail.append({"model": model, "probe": probe, "kind": kind, "level": level, "axis": axis,
                               "mrr": mrr, "ndcg": _mean(g, "x.ndcg"),
                               "recall": _mean(g, "x.recall"), "map": _mean(g, "x.ap"),
                               "asr": asr, "rank_change": _mean(ok, "x.rank_change"),
                               "queries": _mean(g, "x.queries")})  # fmt: skip
                if kind in ("perturbation", "evalset"):
                    key = "ood_doc" if probe in doc_shift else "ood_query"
                    shifts[key].append(relative_drop(base, mrr))
                elif kind == "attack":
                    is_doc = probe in doc_attacks or (
                        "x.target" in g and g["x.target"].notna().any()
                    )
                    if g["error"].notna().all():
                        continue  # not applicable (e.g. a white-box attack on a black-box ranker)
                    bucket = adv["adv_doc" if is_doc else "adv_query"]
                    if probe not in bucket or level >= bucket[probe][0]:
                        bucket[probe] = (level, asr)
            for key, vals in shifts.items():
                row[key] = float(np.mean(vals)) if vals else None
            for key, bucket in adv.items():
                row[key] = {p: {"budget": lv, "asr": a} for p, (lv, a) in bucket.items()}
            rows.append(row)
        return {"rows": rows, "detail": detail}

    def render(self, data: dict[str, Any]) -> str:
        rows = data["rows"]

        def best(key: str, higher: bool) -> Any:
            vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
            return (max if higher else min)(vals) if vals else None

        def adv_best(key: str) -> Any:
            vals = [a["asr"] for r in rows for a in r[key].values() if a["asr"] is not None]
            return min(vals) if vals else None

        b = {"iid": best("iid", True), "ood_query": best("ood_query", False),
             "ood_doc": best("ood_doc", False), "adv_query": adv_best("adv_query"),
             "adv_doc": adv_best("adv_doc")}  # fmt: skip

        def mark(text: str, v: Any, key: str) -> str:
            return f"<b>{text}</b>" if v is not None and v == b[key] and len(rows) > 1 else text

        def adv_cell(r: dict[str, Any], key: str) -> str:
            parts = [mark(f"{e(p)}@{num(a['budget'], 0)}: {pct(a['asr'])}", a["asr"], key)
                     for p, a in r[key].items()]  # fmt: skip
            return "<br>".join(parts) or "&ndash;"

        body = []
        for r in rows:
            sd = f"; sd {num(r['seed_sd'])}" if r.get("seed_sd") is not None else ""
            iid = f"{num(r['iid'])} [{num(r['iid_lo'])}, {num(r['iid_hi'])}]{sd}"
            body.append([e(r["model"]), mark(iid, r["iid"], "iid"),
                         mark(pct(r["ood_query"]), r["ood_query"], "ood_query"),
                         mark(pct(r["ood_doc"]), r["ood_doc"], "ood_doc"),
                         adv_cell(r, "adv_query"), adv_cell(r, "adv_doc")])  # fmt: skip
        head2 = ("ranker", "probe", "kind", "level", "MRR@10", "nDCG@10", "Recall", "MAP",
                 "attack success", "rank change", "queries")  # fmt: skip
        body2 = [[e(d["model"]), e(d["probe"]), e(d["kind"]), _level(d), num(d["mrr"]),
                  num(d["ndcg"]), num(d["recall"]), num(d["map"]), pct(d["asr"]),
                  num(d["rank_change"], 1), num(d["queries"], 1)] for d in data["detail"]]  # fmt: skip
        note = ("<p>Relative drop = (clean MRR - shifted MRR) / clean MRR (lower is more robust); "
                "attack success among queries where the attack applies (lower is more robust); "
                "bold = most robust ranker per task.</p>")  # fmt: skip
        return (table(HEAD, body) + note + "<h4>All ranking probes</h4>"
                + table(head2, body2, num_cols=range(3, 11)))  # fmt: skip
