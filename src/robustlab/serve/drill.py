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
  links to the model's clean examples; a worst condition (``... <span class=ci>probe@level</span>``:
  OOD worst drop, worst robust / certified accuracy; the OOD table's "at" cell) to that group;
- "Subpopulations (slices)": ``model | slice | n (clean) | clean accuracy | <probe> ...``: n and
  clean accuracy link to the slice's clean examples, each probe cell (``acc @level``) to the
  slice's examples of that probe at the level it shows (``&slice=&value=``);
- "Attack ensemble breakdown" (one table per ``<h3>probe</h3>``): ``model | eps | examples |
  wrong before attack | broken by <member> ... | robust to all | failed``: examples links to the
  group, each non-zero count to its records (``&member=k``, ``clean_wrong``, ``robust``,
  ``failed``);
- "Corruption robustness (mCE)": the per-corruption table ``model | <c>: CE (rel. CE) ...``: each
  cell links to the corruption's examples at all its levels (no ``level``), "clean error" of the
  first table to the model's clean examples;
- "Logit margins": ``model | attack | level | mean ...``: the mean links to the attack's records at
  that level, the ``0 (clean)`` row to the model's clean examples;
- "Power law": ``model | attack | errors at every level``: the errors cell to every level;
- "Certified vs empirical" and "Verification": ``model | eps | ... | 83.9% (probe) ...``: a
  percentage naming its certifier or attack links to that probe at the row's epsilon ("all
  attacks", the per-example worst case, names no single group and is not linked).

Section-specific rules are keyed by the section's anchor; every other section gets the generic
rules. Cells that stand for several groups (mean over conditions, mCE) are not linked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from robustlab.report.format import MISSING, e, level, level_text

_SECTION = re.compile(r'(<section id="([^"]+)">)(.*?)(</section>)', re.S)
_ROW = re.compile(r"<tr>(.*?)</tr>", re.S)
_CELL = re.compile(r"(<td[^>]*>)(.*?)(</td>)", re.S)
_ACC = re.compile(r"^\d+(\.\d+)?% <span class=ci>\[")
_WORST = re.compile(r" <span class=ci>([^<\[]+)</span>$")


def link(run_id: str, model: str, probe: str, lvl: float | None, **extra: Any) -> str:
    """The dashboard URL of one group's examples (HTML-escaped for an attribute); ``lvl`` None:
    every level of the probe; ``extra``: the filters ``slice``, ``value``, ``member`` (None: none)."""
    q = {"model": model, "probe": probe, **({} if lvl is None else {"level": lvl})}
    q.update({k: v for k, v in extra.items() if v is not None})
    return escape(f"/run/{run_id}/examples?{urlencode(q)}")


def link_cells(
    html: str,
    run_id: str,
    groups: list[dict[str, Any]],
    slices: Sequence[tuple[str, str, str | None]] = (),
) -> str:
    """``html`` (a report's body) with its table cells linked to their groups' examples
    (``groups``: records of (model, kind, probe, level), as :meth:`Views.groups` gives them;
    ``slices``: (name, slice set, value) of the suite's slices, as :meth:`Views.slices` gives)."""
    by_level: dict[tuple[str, str, str], str] = {}
    evalsets: dict[tuple[str, str], str] = {}
    clean: dict[str, str] = {}
    for g in groups:
        url = link(run_id, g["model"], g["probe"], float(g["level"]))
        if g["kind"] == "clean":
            clean[e(g["model"])] = url
        elif g["kind"] == "evalset":
            evalsets[(e(g["model"]), e(g["probe"]))] = url
        by_level.setdefault(_key(g), url)
    kinds = {e(g["kind"]) for g in groups}

    def at_level(cell: str, m: str, p: str) -> str | None:
        for lv_text in {k[2] for k in by_level if k[:2] == (m, p)}:
            if cell == lv_text or cell.startswith(lv_text + " <span"):
                return by_level[(m, p, lv_text)]
        return None

    conditions: dict[tuple[str, str], str] = {}  # the summary's "probe@level" / evalset cells
    for g in groups:
        if g["kind"] in ("perturbation", "attack", "certifier"):
            cond = e(f"{g['probe']}@{level_text(g['level'])}")
            conditions.setdefault((e(g["model"]), cond), by_level[_key(g)])
        elif g["kind"] == "evalset":
            conditions.setdefault((e(g["model"]), e(g["probe"])), evalsets[_key(g)[:2]])

    def first(cells: list[str], summary: bool) -> tuple[int, str] | None:
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

    def row(cells: list[str], summary: bool) -> list[tuple[int, str]]:
        if len(cells) < 3:
            return []
        hits = [hit] if (hit := first(cells, summary)) else []
        if summary:  # a worst condition ("OOD worst drop ... at", worst robust accuracy ...)
            for i, c in enumerate(cells[1:], 1):
                span = _WORST.search(c)
                cond = span.group(1) if span else c
                url = conditions.get((cells[0], cond)) or conditions.get(
                    (cells[0], cond.rsplit(" ", 1)[0])  # "pgd@0.1 L∞": the norm follows
                )
                if url and i not in {h[0] for h in hits}:
                    hits.append((i, url))
        return hits

    special = _Special(run_id, groups, slices)

    def section(s: re.Match[str]) -> str:
        if s.group(2) in special.rules:
            return s.group(1) + special.section(s.group(2), s.group(3)) + s.group(4)
        summary = s.group(2) == "summary"
        rows = _ROW.sub(lambda r: _row_many(r, lambda c: row(c, summary)), s.group(3))
        return s.group(1) + rows + s.group(4)

    return _SECTION.sub(section, html)


def _key(g: dict[str, Any]) -> tuple[str, str, str]:
    return e(g["model"]), e(g["probe"]), level(g["level"])


_TABLE = re.compile(r"<h3>(.*?)</h3>|<table>(.*?)</table>", re.S)
_TH = re.compile(r"<th[^>]*>(.*?)</th>", re.S)
_AT = re.compile(r"<span class=ci>@(.*?)</span>")
_NAMED = re.compile(r"^[\d.]+% \((.+)\)$")
_COUNT = re.compile(r"^(\d+) \(")


class _Special:
    """Links for the sections whose rows do not lead with (model, probe, level): the table's
    header and the section's ``<h3>`` name the probe; several cells of a row may link."""

    def __init__(
        self,
        run_id: str,
        groups: list[dict[str, Any]],
        slices: Sequence[tuple[str, str, str | None]],
    ) -> None:
        self.run_id = run_id
        self.levels: dict[tuple[str, str], dict[str, float]] = {}
        for g in groups:  # (model, probe) -> {level text: level}: exact text both ways
            by = self.levels.setdefault((e(g["model"]), e(g["probe"])), {})
            by.setdefault(e(level_text(g["level"])), float(g["level"]))
            by.setdefault(level(g["level"]), float(g["level"]))
        self.models = {e(g["model"]): str(g["model"]) for g in groups}
        self.probes = {e(g["probe"]): str(g["probe"]) for g in groups}
        self.slices = {e(name): (group, value) for name, group, value in slices}
        # by section anchor (:func:`robustlab.report.html.unique_sections`: key with dashes)
        self.rules: dict[str, Callable[[str, list[str], list[str]], list[tuple[int, str]]]] = {
            "slices": self._slice,
            "ensemble-breakdown": self._ensemble,
            "mce": self._mce,
            "logit-margins": self._margins,
            "power-law": self._power_law,
            "certified-vs-empirical": self._certified,
            "verification": self._certified,
        }

    def url(self, m: str, p: str, lv_text: str | None, **extra: Any) -> str | None:
        lvls = self.levels.get((m, p))
        if lvls is None or (lv_text is not None and lv_text not in lvls):
            return None
        lv = None if lv_text is None else lvls[lv_text]
        return link(self.run_id, self.models[m], self.probes[p], lv, **extra)

    def section(self, key: str, body: str) -> str:
        rule, probe = self.rules[key], ""

        def table(t: re.Match[str]) -> str:
            nonlocal probe
            if t.group(1) is not None:
                probe = t.group(1)
                return t.group(0)
            head = _TH.findall(t.group(2))
            return _ROW.sub(lambda r: _row_many(r, lambda c: rule(probe, head, c)), t.group(0))

        return _TABLE.sub(table, body)

    def _slice(self, probe: str, head: list[str], c: list[str]) -> list[tuple[int, str]]:
        if len(c) < 4 or c[1] not in self.slices or c[0] not in self.models:
            return []
        group, value = self.slices[c[1]]
        hits = []
        if url := self.url(c[0], "clean", "0", slice=group, value=value):
            hits += [(2, url), (3, url)]
        for i in range(4, min(len(c), len(head))):
            at = _AT.search(c[i])  # "@level"; none for an evaluation set (its one level)
            lvls = self.levels.get((c[0], head[i]), {})
            lv = at.group(1) if at else (next(iter(lvls)) if len(set(lvls.values())) == 1 else "")
            if c[i] != MISSING and (url := self.url(c[0], head[i], lv, slice=group, value=value)):
                hits.append((i, url))
        return hits

    def _ensemble(self, probe: str, head: list[str], c: list[str]) -> list[tuple[int, str]]:
        if len(c) < 5 or not (url := self.url(c[0], probe, c[1])):
            return []
        hits = [(2, url)]
        outcomes = {"wrong before attack": "clean_wrong", "robust to all": "robust",
                    "failed": "failed"}  # fmt: skip
        k = 0
        for i, h in enumerate(head[3 : len(c)], 3):
            member = outcomes.get(h)
            if h.startswith("broken by "):
                member, k = str(k), k + 1
            n = _COUNT.match(c[i])
            m_url = self.url(c[0], probe, c[1], member=member) if member else None
            if m_url and n and int(n.group(1)) > 0:
                hits.append((i, m_url))
        return hits

    def _mce(self, probe: str, head: list[str], c: list[str]) -> list[tuple[int, str]]:
        m = c[0].removesuffix(" (baseline)") if c else ""
        if m not in self.models:
            return []
        if head[1:2] == ["clean error"]:
            url = self.url(m, "clean", "0")
            return [(1, url)] if url else []
        hits = []
        for i, h in enumerate(head[1 : len(c)], 1):
            p = h.removesuffix(": CE (rel. CE)")
            if p != h and (url := self.url(m, p, None)):
                hits.append((i, url))
        return hits

    def _margins(self, probe: str, head: list[str], c: list[str]) -> list[tuple[int, str]]:
        if len(c) < 4 or c[0] not in self.models:
            return []
        url = self.url(c[0], "clean", "0") if c[2] == "0 (clean)" else self.url(c[0], c[1], c[2])
        return [(3, url)] if url else []

    def _power_law(self, probe: str, head: list[str], c: list[str]) -> list[tuple[int, str]]:
        url = self.url(c[0], c[1], None) if len(c) >= 3 and c[0] in self.models else None
        return [(2, url)] if url else []

    def _certified(self, probe: str, head: list[str], c: list[str]) -> list[tuple[int, str]]:
        if len(c) < 4 or c[0] not in self.models:
            return []
        hits = []
        for i in range(2, len(c)):  # "83.9% (certifier)", "86.1% (attack)" at the row's epsilon
            name = _NAMED.search(c[i])
            if name and (url := self.url(c[0], name.group(1), c[1])):
                hits.append((i, url))
        return hits


def _row_many(r: re.Match[str], rule: Callable[[list[str]], list[tuple[int, str]]]) -> str:
    parts = _CELL.findall(r.group(1))
    hits = rule([p[1] for p in parts]) if parts else []
    if not hits:
        return r.group(0)
    for i, url in hits:
        parts[i] = (
            parts[i][0],
            f'<a class="drill-cell" href="{url}">{parts[i][1]}</a>',
            parts[i][2],
        )
    return "<tr>" + "".join("".join(p) for p in parts) + "</tr>"
