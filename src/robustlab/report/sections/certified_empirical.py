"""Report section: certified and empirical robust accuracy on one plot per norm.

Robust accuracy at budget ``eps`` (the share of examples classified correctly everywhere in the
``eps``-ball) is bracketed from both sides: an attack's accuracy is an **upper bound** (it found no
adversarial example on the rest, which does not prove there is none), a sound certifier's
certified accuracy a **lower bound**. Per norm (L∞, L2, ...) that has both attacks (levels =
epsilons) and certifiers (levels = radii) in the run, the section draws, per model, each attack's
accuracy vs epsilon (clean accuracy at 0), the per-example worst case over all attacks of that
norm ("all attacks": an example counts as robust only if every attack failed on it) and each
certifier's certified accuracy at its radii. At every epsilon both sides have, the table shows
the gap and flags an order violation (certified above empirical means a bug in a bound).

Certifiers that declare ``certifies = "smoothed"`` (randomized smoothing) certify the smoothed
classifier, not the base model the attacks attack: they are drawn dotted, marked "(smoothed)", and
left out of the order check (their certified accuracy may exceed the base model's empirical one).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustlab.core.registry import report_sections
from robustlab.report.format import e, level, pct, pp, table
from robustlab.report.sections._vision import accuracy, model_order, plain, probe_specs

ALL = "all attacks"


def _smoothed(spec: dict[str, Any]) -> bool:
    from robustlab.core.registry import certifiers
    from robustlab.report.levels import _component

    obj = _component(certifiers, str(spec.get("name", "")), spec.get("params"))
    return getattr(obj, "certifies", None) == "smoothed"


def _curve(g: pd.DataFrame) -> list[list[float]]:
    return [[float(lv), accuracy(h)] for lv, h in g.groupby("level", sort=True)]


def _worst(att: pd.DataFrame) -> list[list[float]]:
    """Per level: accuracy when an example counts as robust only if no attack broke it."""
    c = att.assign(_c=att["correct"].fillna(0.0))
    per = c.groupby(["level", "replicate", "example_id"])["_c"].min()
    return [[float(lv), float(v)] for lv, v in per.groupby(level="level").mean().items()]


def _panel(
    df: pd.DataFrame, model: str, att: list[str], cert: list[str], smoothed: set[str]
) -> dict[str, Any] | None:
    a = df[(df["model"] == model) & (df["kind"] == "attack") & df["probe"].isin(att)]
    k = df[(df["model"] == model) & (df["kind"] == "certifier") & df["probe"].isin(cert)]
    if a.empty or k.empty:
        return None
    clean = df[(df["model"] == model) & (df["kind"] == "clean")]
    attacks = {str(p): _curve(g) for p, g in a.groupby("probe", sort=False)}
    worst = _worst(a)
    if len(attacks) > 1:
        attacks[ALL] = worst
    certs = {str(p): _curve(g) for p, g in k.groupby("probe", sort=False)}
    checks = []
    emp = dict((lv, v) for lv, v in worst)
    for lv in sorted(emp):
        lower = [(v, p) for p, pts in certs.items() if p not in smoothed for x, v in pts if x == lv]
        if not lower:
            continue
        best, by = max(lower)
        name = ALL if len(attacks) > 1 else next(iter(attacks))
        checks.append(
            {"eps": lv, "certified": best, "certifier": by, "empirical": emp[lv], "attack": name,
             "gap": emp[lv] - best, "ok": bool(best <= emp[lv] + 1e-12)}
        )  # fmt: skip
    return {
        "model": model, "clean": accuracy(clean) if len(clean) else None, "attacks": attacks,
        "certifiers": certs, "smoothed": sorted(smoothed & set(certs)), "checks": checks,
    }  # fmt: skip


@report_sections.register("certified_vs_empirical")
class CertifiedVsEmpirical:
    """Empirical (attack) upper bound and certified lower bound on robust accuracy per norm."""

    title = "Certified vs empirical robustness"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        from robustlab.report.levels import NORMS, probe_axes

        if df.empty or "kind" not in df or not (df["kind"] == "certifier").any():
            return None
        axes, specs = probe_axes(info), probe_specs(info)
        norms = []
        for norm in dict.fromkeys(a.norm for a in axes.values() if a.norm):
            att = [p for p, a in axes.items() if a.name == "epsilon" and a.norm == norm
                   and specs[p].get("kind") == "attack"]  # fmt: skip
            cert = [p for p, a in axes.items() if a.name == "radius" and a.norm == norm
                    and specs[p].get("kind") == "certifier"]  # fmt: skip
            if not att or not cert:
                continue
            smoothed = {p for p in cert if _smoothed(specs[p])}
            panels = [p for m in model_order(info, df) if (p := _panel(df, m, att, cert, smoothed))]
            if panels:
                norms.append({"norm": norm, "label": NORMS.get(norm, f"L{norm}"), "panels": panels})
        return plain({"norms": norms}) if norms else None

    def render(self, data: dict[str, Any]) -> str:
        parts = [
            "<p>Solid: accuracy under each attack (an upper bound on robust accuracy; black: "
            "the per-example worst case over all attacks of the norm). Dashed: certified "
            "accuracy (a lower bound). Dotted, \u201c(smoothed)\u201d: certificates of the "
            "smoothed classifier, not bounds for the base model. The truth lies between the "
            "black line and the highest dashed one.</p>"
        ]
        for n in data["norms"]:
            parts.append(f"<h3>{e(n['label'])}</h3><figure>{_plot(n)}</figure>")
            body = [
                [e(p["model"]), level(c["eps"]), f"{pct(c['certified'])} ({e(c['certifier'])})",
                 f"{pct(c['empirical'])} ({e(c['attack'])})", pp(c["gap"]),
                 "ok" if c["ok"] else "VIOLATED: a bound is wrong"]
                for p in n["panels"] for c in p["checks"]
            ]  # fmt: skip
            if body:
                head = ["model", f"epsilon ({n['label']})", "certified (lower bound)",
                        "under attack (upper bound)", "gap", "order"]  # fmt: skip
                parts.append(table(head, body, num_cols=[1, 2, 3, 4]))
            else:
                parts.append(
                    '<p class="muted">No epsilon is both an attack level and a radius of a '
                    "certifier of the base model: the plot only.</p>"
                )
        return "\n".join(parts)


def _plot(n: dict[str, Any]) -> str:
    import matplotlib

    from robustlab.report import plots

    axis = f"epsilon / radius ({n['label']})"
    with matplotlib.rc_context(plots._RC):
        fig, axes = plots._figure(len(n["panels"]))
        for ax, p in zip(axes, n["panels"], strict=True):
            xs: list[float] = [0.0]
            i = 0
            for name, pts in p["attacks"].items():
                if p["clean"] is not None:
                    pts = [[0.0, p["clean"]], *[q for q in pts if q[0] != 0]]
                x, y = zip(*pts, strict=True)
                style = ({"color": "black", "lw": 2.0} if name == ALL else
                         {"marker": plots._MARKERS[i % len(plots._MARKERS)], "ms": 4})  # fmt: skip
                ax.plot(x, y, label=f"{name} (attack)", clip_on=False, zorder=3, **style)
                xs += list(x)
                i += 1
            for name, pts in p["certifiers"].items():
                x, y = zip(*pts, strict=True)
                sm = name in p["smoothed"]
                ax.plot(x, y, ls=":" if sm else "--", marker=plots._MARKERS[i % len(plots._MARKERS)],
                        ms=4, label=f"{name} ({'smoothed' if sm else 'certified'})", clip_on=False,
                        zorder=3)  # fmt: skip
                xs += list(x)
                i += 1
            ax.set_title(p["model"])
            plots.finish_axes(ax, xs, axis)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("robust accuracy (bounds)")
        fig.suptitle(f"Certified (lower) and empirical (upper) robust accuracy, {n['label']}")
        return plots._svg(fig)
