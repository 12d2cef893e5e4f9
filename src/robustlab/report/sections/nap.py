"""Report section: neural activation pattern specifications (S27; records of ``nap`` diagnosis
probes, :mod:`robustlab.diagnose.nap`).

Per model and probe, one row per class: the NAP's size (neurons fixed), its **coverage** on the
scored data (the share of the class's examples that match their class's NAP: the paper's recall),
its **purity** (of the examples matching ``NAP_c``, the share the model predicts as ``c``), and
the verdict of "``NAP_c`` implies class ``c``" over the whole input domain (level 0): verified,
refuted (by a real input, or by the MILP's counterexample) or undecided (time limit), with the
MILP's proven margin and time. Local levels (``eps > 0``) give, per radius, how many of the
checked Linf balls ∩ NAP were verified, refuted or undecided, next to the plain balls verified.
Plots: coverage and purity per class; verified balls vs ``eps`` with and without the pattern.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, num, pct, table
from robustlab.report.format import level as fmt_level

NAME = "nap"
STATUS = {0: "verified", 1: "refuted", 2: "undecided"}


def _labels(info: dict[str, Any]) -> list[str]:
    """Display labels of the run's ``nap`` diagnosis probes."""
    return [
        p.get("label") or p["name"]
        for p in (info.get("suite") or {}).get("probes", [])
        if p.get("kind") == "diagnosis" and p.get("name") == NAME
    ]


def _col(g: pd.DataFrame, name: str) -> pd.Series:
    return g[name] if name in g else pd.Series([None] * len(g), index=g.index)


def _opt(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _group(g: pd.DataFrame, who: str) -> dict[str, Any]:
    role = _col(g, "x.role")
    test_all = g[role == "test"]
    first = test_all["level"].min()
    test = test_all[test_all["level"] == first]  # matching does not depend on the level
    spec = g[role == "spec"]
    label = test["label"].astype(int).to_numpy()
    pred = pd.to_numeric(test["pred"], errors="coerce").to_numpy()
    matched = [list(m) if isinstance(m, list) else [] for m in _col(test, "x.matched")]
    own = _col(test, "x.own").fillna(False).astype(bool).to_numpy()
    classes = sorted(int(c) for c in spec["label"].unique())
    glob = spec[spec["level"] == 0].set_index(spec[spec["level"] == 0]["label"].astype(int))
    sizes = spec.groupby(spec["label"].astype(int))["x.size"].first()
    rows = []
    for c in classes:
        sel = label == c
        hits = np.array([c in m for m in matched], dtype=bool)
        row: dict[str, Any] = {
            "cls": c, "size": int(sizes[c]), "n": int(sel.sum()),
            "coverage": float(own[sel].mean()) if sel.any() else None,
            "matching": int(hits.sum()),
            "purity": float((pred[hits] == c).mean()) if hits.any() else None,
            "status": None, "stage": None, "margin_lb": None, "seconds": None,
            "cex_class": None, "cex_float32": None,
        }  # fmt: skip
        if c in glob.index and _opt(glob.loc[c].get("x.status")) is not None:
            r = glob.loc[c]
            row.update(
                status=int(r["x.status"]), stage=_opt(r.get("x.stage")),
                margin_lb=_opt(r.get("x.margin_lb")), seconds=_opt(r.get("x.seconds")),
                cex_class=None if _opt(r.get("x.cex_class")) is None else int(r["x.cex_class"]),
                cex_float32=_opt(r.get("x.cex_float32")),
            )  # fmt: skip
        rows.append(row)
    local = []
    for eps, s in spec[spec["level"] > 0].groupby("level", sort=True):
        tot = {k: int(pd.to_numeric(_col(s, f"x.{k}")).fillna(0).sum())
               for k in ("checked", "verified", "refuted", "undecided", "plain_verified")}  # fmt: skip
        local.append({"eps": float(eps), **tot})
    matched_any = np.array([bool(m) for m in matched])
    agree = pd.to_numeric(_col(test, "x.agree"), errors="coerce").dropna()
    return {
        "who": who, "rows": rows, "local": local, "n": len(test),
        "coverage": float(own.mean()) if len(own) else None,
        "matched_any": float(matched_any.mean()) if len(matched_any) else None,
        "unique": float(pd.to_numeric(_col(test, "x.unique")).fillna(0).mean()),
        "agree": float(agree.mean()) if len(agree) else None,
        "delta": _opt(spec["x.delta"].iloc[0]) if len(spec) else None,
    }  # fmt: skip


@report_sections.register("nap")
class NAPSection:
    """NAP size, coverage, purity and verification verdicts per class; local verification per eps."""

    title = "Neural activation pattern specifications"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        labels = _labels(info)
        if df.empty or "kind" not in df or not labels:
            return None
        mine = df[(df["kind"] == "diagnosis") & df["probe"].isin(labels)]
        if mine.empty or "x.role" not in mine:
            return None
        groups = []
        reps = mine.groupby("model")["replicate"].nunique()
        for (model, rep, probe), g in mine.groupby(["model", "replicate", "probe"], sort=True):
            who = str(model) + (f" #{rep}" if reps[model] > 1 else "")
            who += f" · {probe}" if len(labels) > 1 else ""
            groups.append(_group(g, who))
        return {"groups": groups}

    def render(self, data: dict[str, Any]) -> str:
        out = [
            "<p>A class's NAP fixes the phase of the ReLUs that are active (or inactive) on at "
            "least a share delta of its training examples (Geng et al., ICML 2023). Coverage: "
            "the share of the class's examples matching its NAP (recall); purity: of the "
            "examples matching it, the share predicted as the class. The specification "
            "<i>NAP<sub>c</sub> ⇒ class c</i> is verified by MILP over the whole input domain "
            "(refuted by a real input when one matches and gets another class); the margin is "
            "the solver's proven lower bound of z<sub>c</sub> − z<sub>j</sub>.</p>"
        ]
        for g in data["groups"]:
            out.append(
                f"<h4>{e(g['who'])}</h4><p>delta {num(g['delta'])}; {g['n']} examples: "
                f"{pct(g['coverage'])} match their class's NAP, {pct(g['matched_any'])} some "
                f"NAP, {pct(g['unique'])} exactly one; the prediction agrees with a matched "
                f"NAP for {pct(g['agree'])}.</p>"
            )
            body = []
            for r in g["rows"]:
                verdict = "—" if r["status"] is None else STATUS[r["status"]]
                if r["status"] == 1:
                    by = "a real input" if r["stage"] == "data" else "MILP"
                    verdict += f" by {by} (→ class {r['cex_class']}"
                    verdict += ", holds in float32)" if r["cex_float32"] else ", not in float32)"
                secs = "—" if r["seconds"] is None else f"{r['seconds']:.2f} s"
                body.append([
                    str(r["cls"]), str(r["size"]), f"{pct(r['coverage'])} of {r['n']}",
                    "—" if r["purity"] is None else f"{pct(r['purity'])} of {r['matching']}",
                    verdict, "—" if r["margin_lb"] is None else num(r["margin_lb"]), secs,
                ])  # fmt: skip
            head = ["class", "NAP size", "coverage", "purity", "domain spec", "MILP margin",
                    "time"]  # fmt: skip
            out.append(table(head, body, num_cols=[1, 2, 3, 5, 6]))
            if g["local"]:
                lb = [
                    [fmt_level(r["eps"]), str(r["checked"]), str(r["verified"]),
                     str(r["refuted"]), str(r["undecided"]), str(r["plain_verified"])]
                    for r in g["local"]
                ]  # fmt: skip
                out.append(
                    table(["eps (L∞)", "balls checked", "NAP ∩ ball verified", "refuted",
                           "undecided", "plain ball verified"], lb, num_cols=[1, 2, 3, 4, 5])
                )  # fmt: skip
        out.append(_coverage_plot(data["groups"]))
        if any(g["local"] for g in data["groups"]):
            out.append(_local_plot([g for g in data["groups"] if g["local"]]))
        return "\n".join(out)


def _coverage_plot(groups: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(groups), width=5.0, height=3.2)
        for ax, g in zip(axes, groups, strict=True):
            xs = np.arange(len(g["rows"]))
            cov = [plots._num(r["coverage"]) for r in g["rows"]]
            pur = [plots._num(r["purity"]) for r in g["rows"]]
            ax.bar(xs, cov, color="#c9d6e8", edgecolor="#4a6a94", lw=0.6, label="coverage")
            ax.plot(xs, pur, ls="none", marker="D", ms=4, color="#b5523b", label="purity")
            ax.set_xticks(xs, [str(r["cls"]) for r in g["rows"]])
            ax.set_ylim(0, 1.04)
            ax.set_xlabel("class")
            ax.set_title(g["who"])
            ax.legend(fontsize=7, loc="lower right")
        axes[0].set_ylabel("share of examples")
        fig.suptitle("NAP coverage and purity per class")
        return plots._svg(fig)


def _local_plot(groups: list[dict[str, Any]]) -> str:
    import matplotlib

    from robustlab.report import plots

    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(groups), width=4.6, height=3.2)
        for ax, g in zip(axes, groups, strict=True):
            eps = [r["eps"] for r in g["local"]]
            n = [max(r["checked"], 1) for r in g["local"]]
            ax.plot(eps, [r["verified"] / k for r, k in zip(g["local"], n, strict=True)],
                    marker="o", label="NAP ∩ ball")  # fmt: skip
            ax.plot(eps, [r["plain_verified"] / k for r, k in zip(g["local"], n, strict=True)],
                    marker="s", ls="--", label="plain ball")  # fmt: skip
            plots.finish_axes(ax, eps, "eps (L∞)")
            ax.set_ylim(-0.02, 1.04)
            ax.set_title(g["who"])
            ax.legend(fontsize=7)
        axes[0].set_ylabel("share of balls verified")
        fig.suptitle("Local specifications verified vs radius")
        return plots._svg(fig)
