"""Report section: gradient-masking checks (Carlini et al., 2019, "On Evaluating Adversarial
Robustness", section 5), run automatically on a run's Lp attack records.

A defence that only hides its gradients looks robust to gradient attacks and is not. Per model and
norm, from the attacks the suite ran (a check whose attacks are missing says what to add):

1. **iterative >= single-step**: an iterative white-box attack (``pgd``, ``apgd``, ...) leaves at
   most the accuracy a single-step one (``fgsm``, ``step_ll``: attacks declaring ``single_step``)
   leaves, at every shared epsilon;
2. **white-box >= black-box**: the best white-box attack (``needs_grad``) leaves at most the
   accuracy the best black-box attack (``square``, ``hsj``: ``black_box``) leaves;
3. **monotone in epsilon**: no attack's accuracy rises with a larger epsilon;
4. **unbounded epsilon**: at an L∞ epsilon of at least half the model's input range
   (``environment.input_domains``) the best white-box attack (any attack, where the suite has no
   white-box one) leaves accuracy near 0 (at most 5 %).

5. **transfer <= white-box**: a transfer attack (``transfer``: adversarial examples crafted on an
   undefended source model; attacks declaring ``transfer``) leaves at least the accuracy the best
   iterative white-box attack leaves, at every shared epsilon -- a defence that resists its own
   gradients better than another model's adversarial examples hides its gradients.

Differences smaller than a tolerance, max(2 examples, 1 % of them), are noise, not flags.

Adaptive attacks on defended models (``environment.defences``: what a defended model of
:mod:`robustlab.models.defended` declares): a randomized model attacked without EOT (``eot``
of 1) and a non-differentiable pre-processing attacked without BPDA (``bpda: false``) are flagged;
with them, the row says how the white-box attacks went through the defence.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustlab.core.registry import REGISTRIES, report_sections
from robustlab.report.format import e, pct, table
from robustlab.report.format import level as fmt_level

NEAR_ZERO = 0.05  # accuracy an attack at an unbounded epsilon may leave


def _tolerance(n: int) -> float:
    return max(2 / n, 0.01) if n else 0.0


def _attack_traits(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Attack probe label -> its registered class's traits and norm, from the run's suite."""
    from robustlab.report.levels import _label, probe_axis

    out = {}
    for p in (info.get("suite") or {}).get("probes", []):
        if not isinstance(p, dict) or p.get("kind") != "attack":
            continue
        label, axis = _label(p), probe_axis(p)
        if label is None or axis.name != "epsilon" or axis.norm is None:
            continue  # patches, word edits, ...: not an Lp ball
        try:
            cls = REGISTRIES["attacks"].get(p["name"])
        except Exception:  # noqa: BLE001 - a component no longer registered: no traits
            continue
        out[label] = {
            "name": p["name"], "norm": axis.norm,
            "single_step": bool(getattr(cls, "single_step", False)),
            "white_box": bool(getattr(cls, "needs_grad", False)),
            "black_box": bool(getattr(cls, "black_box", False)),
            "transfer": bool(getattr(cls, "transfer", False)),
        }  # fmt: skip
    return out


def _checks(df: pd.DataFrame, info: dict[str, Any]) -> list[dict[str, Any]]:
    traits = _attack_traits(info)
    att = df[(df["kind"] == "attack") & df["probe"].isin(traits)]
    if att.empty:
        return []
    domains = (info.get("environment") or {}).get("input_domains") or {}
    acc = att.groupby(["model", "probe", "level"])["correct"].agg(["mean", "size"]).reset_index()
    acc["norm"] = acc["probe"].map(lambda p: traits[p]["norm"])
    rows: list[dict[str, Any]] = []
    defences = (info.get("environment") or {}).get("defences") or {}
    seen = {k.rsplit("#", 1)[0]: d for k, d in defences.items()}  # by model, any replicate
    for (model, norm), g in acc.groupby(["model", "norm"], sort=True):
        widths = [hi - lo for k, (lo, hi) in domains.items() if k.rsplit("#", 1)[0] == model]
        checks = _group_checks(g, traits, str(norm), widths)
        white = any(traits[p]["white_box"] for p in g["probe"].unique())
        if white and isinstance(seen.get(model), dict):
            checks += _adaptive_checks(seen[model])
        for check, level, detail, ok in checks:
            rows.append({"model": str(model), "norm": str(norm), "check": check,
                         "level": level, "detail": detail, "ok": ok})  # fmt: skip
    return rows


def _adaptive_checks(defence: dict[str, Any]) -> list[tuple[str, Any, str, bool | None]]:
    """Whether the white-box attacks went through a defended model's defence: EOT on a
    randomized one, BPDA through a non-differentiable step."""
    out: list[tuple[str, Any, str, bool | None]] = []
    name = e(str(defence.get("name", "defence")))
    if defence.get("randomized"):
        n = int(defence.get("eot") or 1)
        detail = (f"{name}: gradients averaged over {n} draws (EOT)" if n > 1 else
                  f"{name} is randomized and was attacked without EOT (eot: 1)")  # fmt: skip
        out.append(("randomized defence attacked with EOT", None, detail, n > 1))
    if defence.get("non_differentiable"):
        bpda = bool(defence.get("bpda"))
        detail = (f"{name}: gradients through BPDA (identity)" if bpda else
                  f"{name} has a non-differentiable step attacked without BPDA (bpda: false)")  # fmt: skip
        out.append(("non-differentiable step attacked with BPDA", None, detail, bpda))
    return out


def _best(g: pd.DataFrame, traits: dict[str, Any], kind: str, level: float) -> Any:
    """(probe, accuracy, n) of the strongest attack of ``kind`` at ``level``; white-box means
    iterative white-box here (single-step attacks are compared with them)."""
    h = g[(g["level"] == level) & g["probe"].map(lambda p: traits[p][kind])]
    if kind == "white_box":
        h = h[~h["probe"].map(lambda p: traits[p]["single_step"])]
    if h.empty:
        return None
    r = h.loc[h["mean"].idxmin()]
    return str(r["probe"]), float(r["mean"]), int(r["size"])


def _compare(
    g: pd.DataFrame, traits: dict[str, Any], strong: str, weak: str, check: str, missing: str
) -> list[tuple[str, Any, str, bool | None]]:
    """At each epsilon both kinds ran: the ``strong`` kind leaves at most the ``weak`` one's
    accuracy (within the tolerance)."""
    out: list[tuple[str, Any, str, bool | None]] = []
    for lv in sorted(g["level"].unique()):
        s, w = _best(g, traits, strong, lv), _best(g, traits, weak, lv)
        if s and w:
            ok = s[1] <= w[1] + _tolerance(min(s[2], w[2]))
            out.append((check, lv, f"{e(s[0])} {pct(s[1])} vs {e(w[0])} {pct(w[1])}", ok))
    return out or [(check, None, f"not run: needs {missing} at one epsilon", None)]


def _group_checks(
    g: pd.DataFrame, traits: dict[str, Any], norm: str, widths: list[float]
) -> list[tuple[str, Any, str, bool | None]]:
    """The five checks on one model's attacks in one norm."""
    out = _compare(g, traits, "white_box", "single_step",
                   "iterative attack at least as strong as single-step",
                   "a single-step (fgsm) and an iterative (pgd) attack")  # fmt: skip
    out += _compare(g, traits, "white_box", "black_box",
                    "white-box attack at least as strong as black-box",
                    "an iterative white-box (pgd) and a black-box (square) attack")  # fmt: skip
    out += _compare(g, traits, "white_box", "transfer",
                    "transfer attack no stronger than white-box",
                    "an iterative white-box (pgd) and a transfer attack")  # fmt: skip
    rises, multi = [], False
    for probe, h in g.groupby("probe"):
        h = h.sort_values("level")
        multi = multi or len(h) > 1
        pts = list(h[["level", "mean", "size"]].itertuples(index=False))
        for (l0, a0, n0), (l1, a1, n1) in zip(pts, pts[1:], strict=False):
            if a1 > a0 + _tolerance(min(n0, n1)):
                rises.append(
                    f"{e(probe)}: {pct(a0)} at {fmt_level(l0)} -> {pct(a1)} at {fmt_level(l1)}"
                )
    detail = "; ".join(rises) if rises else ("no rise" if multi else "not run: needs two levels")
    out.append(
        ("accuracy does not rise with epsilon", None, detail, (not rises) if multi else None)
    )
    if norm == "inf" and widths:
        big = [lv for lv in g["level"].unique() if lv >= 0.5 * max(widths)]
        check = "accuracy near 0 at an unbounded epsilon"
        if big:  # gradient attacks must succeed there (any attack, where none is white-box)
            h = g[g["level"] == max(big)]
            white = h[h["probe"].map(lambda p: traits[p]["white_box"])]
            h = white if len(white) else h
            r = h.loc[h["mean"].idxmin()]
            out.append((check, float(max(big)), f"{e(r['probe'])} {pct(r['mean'])}",
                        bool(r["mean"] <= NEAR_ZERO)))  # fmt: skip
        else:
            need = fmt_level(0.5 * max(widths))
            out.append((check, None, f"not run: add an L∞ level of at least {need} (half the "
                        "input range)", None))  # fmt: skip
    return out


@report_sections.register("masking")
class GradientMasking:
    """Carlini et al.'s gradient-masking checks on the run's Lp attacks, flagged per model."""

    title = "Gradient-masking checks"

    def build(self, df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any] | None:
        if df.empty or "kind" not in df or not (df["kind"] == "attack").any():
            return None
        rows = _checks(df, info)
        if not rows:
            return None
        flagged = sorted({r["model"] for r in rows if r["ok"] is False})
        return {"rows": rows, "flagged": flagged}

    def render(self, data: dict[str, Any]) -> str:
        verdict = {True: "ok", False: "FLAG: possible gradient masking", None: "not run"}
        body = [
            [e(r["model"]), e(r["norm"]), e(r["check"]),
             "" if r["level"] is None else fmt_level(r["level"]), r["detail"], verdict[r["ok"]]]
            for r in data["rows"]
        ]  # fmt: skip
        head = ["model", "norm", "check", "epsilon", "measured", "verdict"]
        if data["flagged"]:
            note = (
                f"<p><b>Possible gradient masking for {e(', '.join(data['flagged']))}</b>: its "
                "gradient attacks understate what an attacker can do; trust the strongest "
                "(black-box or adaptive) attack's numbers, not the white-box ones.</p>"
            )
        else:
            note = "<p>No check flagged gradient masking on the attacks this run has.</p>"
        note += (
            "<p>Checks of Carlini et al. (2019); differences below max(2 examples, 1 %) are not "
            "flagged.</p>"
        )
        return note + table(head, body)
