"""Render report content (from :func:`robustlab.report.build_report`) as one self-contained HTML page.

No JavaScript, no network: inline CSS, inline SVG plots, plain tables. The HTML is a function of the
JSON content only, so a stored ``.json`` report can be re-rendered later.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from robustlab.report import plots
from robustlab.report.format import ci, e, level, num, pct, pp, table
from robustlab.report.overview import header, summary

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
 max-width:1180px;margin:0 auto;padding:1.2em 1.5em 4em}
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:2em;border-bottom:2px solid #d9e2ec;padding-bottom:.2em}
h3{margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{padding:3px 9px;white-space:nowrap;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f0f4f8;font-weight:600}tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#7b8794;font-size:.9em}.muted{color:#7b8794}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em;margin:1em 0}
.ok{color:#2f7d32}.bad{color:#b42318}
.warn td{white-space:normal}.scroll{overflow-x:auto}
figure{margin:.5em 0 1em}svg{max-width:100%;height:auto}
nav a{margin-right:1em}code{font-size:.92em;background:#f0f4f8;padding:0 3px}
details{margin:1em 0}summary{cursor:pointer;font-weight:600}
"""

SECTIONS = (
    ("summary", "Summary"),
    ("slices", "Subpopulations (slices)"),
    ("transformations", "Transformations"),
    ("evaluation-sets", "Evaluation sets"),
    ("attacks", "Attacks"),
    ("metrics", "All metrics"),
)


def _clean_map(c: dict[str, Any]) -> dict[str, Any]:
    return {r["model"]: r["accuracy"] for r in c["summary"]["iid"]}


def _slices(c: dict[str, Any]) -> str:
    sec = c["sections"]["slices"]
    notes = "".join(f'<p class="warn">{e(n)}</p>' for n in sec["notes"])
    if not sec["rows"]:
        what = (
            "no slices defined in the suite" if not sec["specs"] else "no records fell in a slice"
        )
        return notes + f'<p class="muted">No slice data: {what}.</p>'
    rows = sec["rows"]
    present = {r["probe"] for r in rows if r["kind"] != "clean"}
    probes = [p for p in c["probes"] if p in present] + sorted(present - set(c["probes"]))
    by_key = {(r["model"], r["slice"], r["probe"]): r for r in rows}
    body = []
    for model, name in dict.fromkeys((r["model"], r["slice"]) for r in rows):
        cl = by_key.get((model, name, "clean"))
        cells = [e(model), e(name), num(cl["n"], 0) if cl else "–",
                 ci(cl["accuracy"], cl["accuracy_lo"], cl["accuracy_hi"]) if cl else "–"]  # fmt: skip
        for p in probes:
            r = by_key.get((model, name, p))
            at = f" <span class=ci>{e(r['condition'][len(p) :])}</span>" if r else ""
            cells.append(pct(r["accuracy"]) + at if r else "–")
        body.append(cells)
    head = ["model", "slice", "n (clean)", "clean accuracy [95% CI]", *probes]
    plot = plots.slice_bars(
        rows,
        c["models"],
        probes,
        "Accuracy per slice: clean (bars) and at the worst level of each probe (markers)",
    )
    return notes + f"<figure>{plot}</figure>" + table(head, body, num_cols=range(2, len(head)))


def _by_axis(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by the meaning of their level (``axis``: "epsilon (L∞)", "severity", ...), in
    order of appearance: one plot and one table per group, so levels of different meanings or norms
    never share an axis or a column."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("axis") or "level", []).append(r)
    return groups


def _transformations(c: dict[str, Any]) -> str:
    rows = c["sections"]["transformations"]["rows"]
    if not rows:
        return '<p class="muted">No perturbations in this run.</p>'
    parts = []
    for axis, group in _by_axis(rows).items():
        title = f"Accuracy vs {axis} (0 = clean), 95% CI bands"
        plot = plots.curves(group, c["models"], _clean_map(c), axis, title)
        head = [
            "model",
            "perturbation",
            axis,
            "accuracy [95% CI]",
            "drop vs clean",
            "seed std",
            "n",
        ]
        body = [[e(r["model"]), e(r["probe"]), level(r["level"]), ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
                 pp(r["drop"]), pp(r["accuracy_std"]), num(r["n"], 0)] for r in group]  # fmt: skip
        parts.append(f"<h3>{escape(axis)}</h3><figure>{plot}</figure>"
                     + table(head, body, num_cols=range(2, len(head))))  # fmt: skip
    return "\n".join(parts)


def _attacks(c: dict[str, Any]) -> str:
    rows = c["sections"]["attacks"]["rows"]
    if not rows:
        return '<p class="muted">No attacks in this run.</p>'
    parts = []
    for axis, group in _by_axis(rows).items():
        title = f"Robust accuracy vs {axis} (0 = clean), 95% CI bands"
        plot = plots.curves(group, c["models"], _clean_map(c), axis, title)
        head = ["model", "attack", axis, "robust accuracy [95% CI]", "attack success [95% CI]",
                "mean queries", "median distance", "n"]  # fmt: skip
        body = [[e(r["model"]), e(r["probe"]), level(r["level"]),
                 ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
                 ci(r["attack_success_rate"], r["attack_success_rate_lo"], r["attack_success_rate_hi"]),
                 num(r["mean_queries"], 1), num(r["median_distance"], 4), num(r["n"], 0)]
                for r in group]  # fmt: skip
        parts.append(f"<h3>{escape(axis)}</h3><figure>{plot}</figure>"
                     + table(head, body, num_cols=range(2, len(head))))  # fmt: skip
    return "\n".join(parts)


def _evalsets(c: dict[str, Any]) -> str:
    rows = c["sections"]["evaluation_sets"]["rows"]
    if not rows:
        return '<p class="muted">No evaluation sets in this run.</p>'
    plot = plots.set_bars(rows, c["models"], _clean_map(c), "Accuracy per evaluation set vs clean")
    body = [[e(r["model"]), e(r["probe"]), ci(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
             pct(r["clean_accuracy"]), pp(r["drop"]), num(r["n"], 0)] for r in rows]  # fmt: skip
    head = ["model", "evaluation set", "accuracy [95% CI]", "clean accuracy", "drop vs clean", "n"]
    return f"<figure>{plot}</figure>" + table(head, body, num_cols=range(2, 6))


def _level_cell(r: dict[str, Any]) -> str:
    """A level with its meaning where it has one (not for clean records and evaluation sets)."""
    if r.get("kind") in ("clean", "evalset"):
        return level(r["level"])
    axis = r.get("axis")
    return level(r["level"]) + (f" <span class=ci>{e(axis)}</span>" if axis else "")


def _metrics(c: dict[str, Any]) -> str:
    rows = c["sections"]["metrics"]["rows"]
    fixed = ("model", "kind", "probe", "level", "n", "axis", "level_name", "norm")
    names = [k for k in (rows[0] if rows else {}) if k not in fixed
             and not k.endswith(("_lo", "_hi", "_std"))]  # fmt: skip
    body = [[e(r["model"]), e(r["kind"]), e(r["probe"]), _level_cell(r), num(r["n"], 0)]
            + [ci(r[m], r[f"{m}_lo"], r[f"{m}_hi"], as_pct=False) for m in names] for r in rows]  # fmt: skip
    t = table(
        ["model", "kind", "probe", "level", "n", *names], body, num_cols=range(3, 5 + len(names))
    )
    return f"<details><summary>{len(rows)} groups × {len(names)} metrics</summary>{t}</details>"


def unique_sections(items: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``(anchor, title, html)`` per section with anchors and titles unique by construction.

    An anchor is the section's key as a valid id (``certification_curves`` ->
    ``certification-curves``); a taken anchor gets ``-2``, ``-3`` ...; a title already used
    (case-insensitively) gets its section's key in parentheses. So two sections never share a nav
    link or a heading, whatever titles registered sections declare.
    """
    anchors: set[str] = set()
    titles: set[str] = set()
    out = []
    for key, title, html in items:
        base = re.sub(r"[^a-z0-9_-]+", "-", key.lower()).replace("_", "-").strip("-") or "section"
        anchor, n = base, 2
        while anchor in anchors:
            anchor, n = f"{base}-{n}", n + 1
        shown, n = title, 2
        while shown.casefold() in titles:
            shown = f"{title} ({key})" if n == 2 else f"{title} ({key} {n})"
            n += 1
        anchors.add(anchor)
        titles.add(shown.casefold())
        out.append((anchor, shown, html))
    return out


def render(content: dict[str, Any]) -> str:
    """The full HTML page for report ``content``."""
    run = content["run"]
    parts = {
        "summary": summary(content),
        "slices": _slices(content),
        "transformations": _transformations(content),
        "evaluation-sets": _evalsets(content),
        "attacks": _attacks(content),
        "metrics": _metrics(content),
    }  # fmt: skip
    items = [(k, t, parts[k]) for k, t in SECTIONS[:-1]]
    if content.get("comparison"):  # a report built for two or more runs
        from robustlab.report import comparison

        items.insert(
            0, ("comparison", "Comparison of runs", comparison.render(content["comparison"]))
        )
    if content["summary"].get("leaderboard"):  # a run with several models
        from robustlab.report import leaderboard

        at = next(i for i, item in enumerate(items) if item[0] == "summary") + 1
        items.insert(
            at,
            ("leaderboard", "Leaderboard", leaderboard.render(content["summary"]["leaderboard"])),
        )
    for key, ext in content.get("extensions", {}).items():
        from robustlab.core.registry import report_sections

        section = report_sections.get(key)
        renderer = section() if isinstance(section, type) else section
        items.append((key, ext["title"], renderer.render(ext["data"])))
    items.append((SECTIONS[-1][0], SECTIONS[-1][1], parts[SECTIONS[-1][0]]))  # "All metrics" last
    sections = unique_sections(items)
    nav = "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t, _ in sections)
    body = "\n".join(
        f'<section id="{k}"><h2>{escape(t)}</h2>\n{html}</section>' for k, t, html in sections
    )
    title = f"robustlab report — {run.get('suite')} — {run['id']}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>robustlab report: {e(run.get('suite'))}</h1>\n<nav>{nav}</nav>\n"
        f"{header(run)}\n{body}\n</body></html>\n"
    )
