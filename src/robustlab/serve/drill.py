"""Drill-down from the cells of a run's embedded report to the examples behind them.

The report's HTML is a function of its JSON content alone (it knows nothing of the dashboard), so
its table cells are linked here, after rendering: a row is recognised by its leading cells, which
the report writes with :func:`robustlab.report.format.e` and :func:`~robustlab.report.format.level`
-- the same helpers build the keys below, so a match is exact text, not a guess.

- ``model | probe | level ... | accuracy``: transformation, attack, adversarial-summary and
  certified tables: the accuracy cell links to that group's examples;
- ``model | evaluation set | accuracy``: evaluation-set table;
- ``model | kind | probe | level | n | metric ...``: "All metrics": the first metric cell;
- in the summary section, ``model | ... | clean accuracy [CI]``: the first accuracy-with-CI cell
  links to the model's clean examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import urlencode

from robustlab.report.format import e, level

_SECTION = re.compile(r'(<section id="([^"]+)">)(.*?)(</section>)', re.S)
_ROW = re.compile(r"<tr>(.*?)</tr>", re.S)
_CELL = re.compile(r"(<td[^>]*>)(.*?)(</td>)", re.S)
_ACC = re.compile(r"^\d+(\.\d+)?% <span class=ci>\[")


def link(run_id: str, model: str, probe: str, lvl: float) -> str:
    """The dashboard URL of one group's examples (HTML-escaped for an attribute)."""
    q = urlencode({"model": model, "probe": probe, "level": lvl})
    return escape(f"/run/{run_id}/examples?{q}")


def link_cells(html: str, run_id: str, groups: list[dict[str, Any]]) -> str:
    """``html`` (a report's body) with its table cells linked to their groups' examples
    (``groups``: records of (model, kind, probe, level), as :meth:`Views.groups` gives them)."""
    by_level: dict[tuple[str, str, str], str] = {}
    evalsets: dict[tuple[str, str], str] = {}
    clean: dict[str, str] = {}
    for g in groups:
        url = link(run_id, g["model"], g["probe"], float(g["level"]))
        if g["kind"] == "clean":
            clean[e(g["model"])] = url
        elif g["kind"] == "evalset":
            evalsets[(e(g["model"]), e(g["probe"]))] = url
        by_level.setdefault((e(g["model"]), e(g["probe"]), level(g["level"])), url)
    kinds = {e(g["kind"]) for g in groups}

    def at_level(cell: str, m: str, p: str) -> str | None:
        for lv_text in {k[2] for k in by_level if k[:2] == (m, p)}:
            if cell == lv_text or cell.startswith(lv_text + " <span"):
                return by_level[(m, p, lv_text)]
        return None

    def row(cells: list[str], summary: bool) -> tuple[int, str] | None:
        if len(cells) < 3:
            return None
        m = cells[0]
        if len(cells) >= 4 and (url := at_level(cells[2], m, cells[1])):
            return 3, url
        if (m, cells[1]) in evalsets:
            return 2, evalsets[(m, cells[1])]
        if len(cells) >= 6 and cells[1] in kinds and (url := at_level(cells[3], m, cells[2])):
            return 5, url
        if summary and m in clean:
            for i, c in enumerate(cells[1:], 1):
                if _ACC.match(c):
                    return i, clean[m]
        return None

    def section(s: re.Match[str]) -> str:
        summary = s.group(2) == "summary"
        return s.group(1) + _ROW.sub(lambda r: _row(r, summary, row), s.group(3)) + s.group(4)

    return _SECTION.sub(section, html)


def _row(
    r: re.Match[str], summary: bool, rule: Callable[[list[str], bool], tuple[int, str] | None]
) -> str:
    parts = _CELL.findall(r.group(1))
    if not parts:
        return r.group(0)
    hit = rule([p[1] for p in parts], summary)
    if hit is None:
        return r.group(0)
    i, url = hit
    parts[i] = (parts[i][0], f'<a class="drill-cell" href="{url}">{parts[i][1]}</a>', parts[i][2])
    return "<tr>" + "".join("".join(p) for p in parts) + "</tr>"
