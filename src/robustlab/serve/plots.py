"""The S32 plot of :mod:`robustlab.serve`: each probe's accuracy across a suite's runs."""

from __future__ import annotations

from typing import Any

from robustlab.report.format import level_text
from robustlab.report.plots import _MARKERS, _RC, _svg

MAX_PANELS = 12  # probes drawn (the table below the plot lists them all)


def history_svg(h: dict[str, Any]) -> str | None:
    """One panel per (model,) kind and probe: accuracy (95 % CI band) per level against the runs
    in date order; regressions marked with a red cross. ``None`` with fewer than two runs."""
    import matplotlib

    infos = h["infos"]
    if len(infos) < 2 or not h["rows"]:
        return None
    panels: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for k in h["rows"]:
        panels.setdefault(k[:-1], []).append(k)
    keys = list(panels)[:MAX_PANELS]
    from robustlab.report.plots import _figure

    with matplotlib.rc_context(_RC):
        fig, axes = _figure(len(keys), width=5.0, height=2.8)
        xs = list(range(len(infos)))
        for ax, pk in zip(axes, keys, strict=True):
            for j, k in enumerate(panels[pk]):
                cells = [h["cells"][k].get(i["id"]) for i in infos]
                pts = [(x, c) for x, c in zip(xs, cells, strict=True) if c is not None]
                if not pts:
                    continue
                x = [p[0] for p in pts]
                line = ax.plot(x, [p[1]["value"] for p in pts], marker=_MARKERS[j % len(_MARKERS)],
                               ms=4, label=f"level {level_text(k[-1])}")[0]  # fmt: skip
                ax.fill_between(x, [p[1]["lo"] for p in pts], [p[1]["hi"] for p in pts],
                                color=line.get_color(), alpha=0.15, lw=0)  # fmt: skip
                reg = [p for p in pts if p[1].get("regression")]
                if reg:
                    ax.plot([p[0] for p in reg], [p[1]["value"] for p in reg], "x", color="#b42318",
                            ms=10, mew=2.5, label="regression" if j == 0 else None)  # fmt: skip
            ax.set_title(" · ".join(str(v) for v in pk))
            ax.set_xticks(xs, [i["id"][:15] for i in infos], rotation=20, ha="right", fontsize=7)
            ax.set_ylabel(h["metric"])
            ax.legend(fontsize=7)
        return _svg(fig)
