"""Plots for the report, rendered with matplotlib to inline SVG text (no files, no network).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, so no global backend
state and nothing happens at import time); text stays ``<text>`` (``svg.fonttype: none``) so the
SVG is small and selectable. Every function takes report rows (lists of dicts, as in the JSON) and
draws one panel per model.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

Rows = Sequence[dict[str, Any]]

_RC = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
_MARKERS = "osD^v<>ph*"


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _figure(
    n_panels: int, width: float = 6.0, height: float = 3.4, cols: int = 2, sharey: bool = True
) -> tuple[Any, list[Any]]:
    """A grid of ``n_panels`` panels, ``cols`` per row (unused cells hidden)."""
    from matplotlib.figure import Figure

    cols = min(n_panels, cols)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    # no RDF metadata block: it carries external namespace URLs and a date (not reproducible)
    meta = {"Date": None, "Creator": None, "Format": None, "Type": None}
    fig.savefig(buf, format="svg", metadata=meta)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def finish_axes(ax: Any, levels: Sequence[float], xlabel: str, span: Sequence[float] = ()) -> None:
    """Label the level axis and pad both axes, so that markers at 0 (and at accuracy 0 or 1) are
    not cut by the frame; the x range covers ``levels`` and ``span``. With few distinct levels, the
    ticks sit exactly at them, labelled as the tables print levels (``8/255``), leaving out a
    level too close to a larger one to be read."""
    from robustlab.report.format import level_text

    def finite(vs: Sequence[float]) -> list[float]:
        return sorted({float(v) for v in vs if v is not None and math.isfinite(float(v))})

    xs, every = finite(levels), finite([*levels, *span])
    if every:
        lo, hi = every[0], every[-1]
        pad = 0.05 * (hi - lo) if hi > lo else 0.05 * (abs(hi) or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        if 0 < len(xs) <= 8:
            gap = 0.07 * (hi - lo)
            ticks = [xs[-1]]
            for v in reversed(xs[:-1]):
                if ticks[-1] - v >= gap:
                    ticks.append(v)
            ticks.reverse()
            labels = [level_text(v) for v in ticks]
            long = sum(len(t) for t in labels) > 40
            ax.set_xticks(
                ticks, labels, rotation=30 if long else 0, ha="right" if long else "center"
            )
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel(xlabel)


def _models(rows: Rows, models: Sequence[str]) -> list[str]:
    present = {r["model"] for r in rows}
    return [m for m in models if m in present] + sorted(present - set(models))


def curves(
    rows: Rows,
    models: Sequence[str],
    clean: dict[str, float],
    xlabel: str,
    title: str,
) -> str:
    """Accuracy vs level, one line (with its 95% CI band) per probe and one panel per model.

    ``clean`` (model -> clean accuracy) is drawn as level 0 of every line.
    """
    import matplotlib

    with matplotlib.rc_context(_RC):
        ms = _models(rows, models)
        fig, axes = _figure(len(ms))
        for ax, model in zip(axes, ms, strict=True):
            mrows = [r for r in rows if r["model"] == model]
            probes = list(dict.fromkeys(r["probe"] for r in mrows))
            levels: list[float] = []
            for i, probe in enumerate(probes):
                pr = sorted((r for r in mrows if r["probe"] == probe), key=lambda r: r["level"])
                xs = [r["level"] for r in pr]
                ys = [_num(r["accuracy"]) for r in pr]
                lo = [_num(r["accuracy_lo"]) for r in pr]
                hi = [_num(r["accuracy_hi"]) for r in pr]
                if model in clean and clean[model] is not None and 0 not in xs:
                    c = clean[model]  # level 0 = clean, in its place (levels may be signed)
                    pts = sorted([(0.0, c, c, c), *zip(xs, ys, lo, hi, strict=True)])
                    xs, ys, lo, hi = (list(t) for t in zip(*pts, strict=True))
                (line,) = ax.plot(
                    xs, ys, marker=_MARKERS[i % len(_MARKERS)], ms=4, label=probe, clip_on=False,
                    zorder=3,
                )  # fmt: skip
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
                levels += xs
            ax.set_title(model)
            finish_axes(ax, levels, xlabel)
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("accuracy")
        fig.suptitle(title)
        return _svg(fig)


def slice_bars(rows: Rows, models: Sequence[str], probes: Sequence[str], title: str) -> str:
    """Clean accuracy per slice as bars (95% CI whiskers), each probe's worst level as markers."""
    import matplotlib
    import numpy as np

    with matplotlib.rc_context(_RC):
        ms = _models(rows, models)
        fig, axes = _figure(len(ms), width=7.0, height=3.6)
        for ax, model in zip(axes, ms, strict=True):
            mrows = [r for r in rows if r["model"] == model]
            names = list(dict.fromkeys(r["slice"] for r in mrows))
            pos = {s: i for i, s in enumerate(names)}
            base = [r for r in mrows if r["probe"] == "clean"]
            x = np.array([pos[r["slice"]] for r in base])
            y = np.array([_num(r["accuracy"]) for r in base])
            err = np.abs(
                np.array(
                    [[_num(r["accuracy_lo"]) for r in base], [_num(r["accuracy_hi"]) for r in base]]
                )
                - y
            )
            ax.bar(
                x,
                y,
                yerr=err,
                color="#c9d6e8",
                edgecolor="#4a6a94",
                lw=0.6,
                capsize=2,
                label="clean",
            )
            present = {r["probe"] for r in mrows if r["probe"] != "clean"}
            shown = [p for p in probes if p in present] + sorted(present - set(probes))
            for i, probe in enumerate(shown):
                pr = [r for r in mrows if r["probe"] == probe]
                off = (i - (len(shown) - 1) / 2) * min(0.08, 0.7 / max(len(shown), 1))
                ax.plot(
                    [pos[r["slice"]] + off for r in pr], [_num(r["accuracy"]) for r in pr],
                    ls="none", marker=_MARKERS[i % len(_MARKERS)], ms=4,
                    label=pr[0]["condition"], clip_on=False, zorder=3,
                )  # fmt: skip
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            ax.set_ylim(0, 1.04)
            ax.set_title(model)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0].set_ylabel("accuracy")
        fig.suptitle(title)
        return _svg(fig)


def set_bars(rows: Rows, models: Sequence[str], clean: dict[str, Any], title: str) -> str:
    """Accuracy per evaluation set next to clean accuracy, with 95% CI whiskers."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        ms = _models(rows, models)
        fig, axes = _figure(len(ms), width=4.5, height=3.0)
        for ax, model in zip(axes, ms, strict=True):
            mrows = [r for r in rows if r["model"] == model]
            names = ["clean", *[r["probe"] for r in mrows]]
            ys = [_num(clean.get(model)), *[_num(r["accuracy"]) for r in mrows]]
            lo = [0.0, *[y - _num(r["accuracy_lo"]) for y, r in zip(ys[1:], mrows, strict=True)]]
            hi = [0.0, *[_num(r["accuracy_hi"]) - y for y, r in zip(ys[1:], mrows, strict=True)]]
            colors = ["#9aa5b1"] + ["#4a6a94"] * len(mrows)
            ax.bar(range(len(names)), ys, yerr=[lo, hi], color=colors, capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            ax.set_ylim(0, 1.04)
            ax.set_title(model)
        axes[0].set_ylabel("accuracy")
        fig.suptitle(title)
        return _svg(fig)
