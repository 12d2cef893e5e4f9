"""Small HTML formatting helpers for the report: escaped text, numbers, CIs and tables.

Every helper returns HTML-safe text; missing values (None/NaN) render as an en dash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from html import escape
from typing import Any

MISSING = "–"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def e(v: Any) -> str:
    """Escaped text of ``v`` (an en dash when missing)."""
    return MISSING if _missing(v) else escape(str(v))


def num(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as is; ``digits`` 0 for counts)."""
    if _missing(v):
        return MISSING
    x = float(v)
    if isinstance(v, int) or digits == 0:
        return f"{round(x):,}"
    if x and abs(x) < 10.0**-digits:
        return f"{x:.2g}"
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def level_text(v: Any) -> str:
    """A probe level as plain text: a short decimal as is (``0.1``, ``3``), a multiple of 1/1020 up
    to 1 as ``k/255`` (``8/255``, ``0.5/255``: image budgets) unless it is a simple fraction ``p/q``
    with ``q <= 16`` (``1/3``), anything else with 4 significant digits."""
    if _missing(v):
        return MISSING
    x = float(v)
    if x == round(x, 4):
        return f"{x:.4f}".rstrip("0").rstrip(".") if x != int(x) else f"{int(x)}"
    f = Fraction(x).limit_denominator(16)
    if abs(float(f) - x) < 1e-9 * max(1.0, abs(x)):
        return f"{f.numerator}/{f.denominator}"
    k = x * 255
    if 0 < abs(x) <= 1 and abs(k * 4 - round(k * 4)) < 1e-6:
        return f"{round(k * 4) / 4:g}/255"
    return f"{x:.4g}"


def level(v: Any) -> str:
    """:func:`level_text` as HTML; where it is not the plain decimal, the decimal is the tooltip."""
    text = level_text(v)
    if _missing(v) or "/" not in text:
        return escape(text)
    return f'<span title="{float(v):.6g}">{escape(text)}</span>'


def pct(v: Any) -> str:
    """A rate in [0, 1] as a percentage with one decimal."""
    return MISSING if _missing(v) else f"{100 * float(v):.1f}%"


def pp(v: Any, signed: bool = False) -> str:
    """A difference or spread of rates in percentage points."""
    return MISSING if _missing(v) else f"{100 * float(v):{'+' if signed else ''}.1f} pp"


def ci(v: Any, lo: Any, hi: Any, as_pct: bool = True) -> str:
    """``value [lo, hi]`` with the interval de-emphasised."""
    if _missing(v):
        return MISSING
    if as_pct:
        main = pct(v)
        rng = "" if _missing(lo) else f" <span class=ci>[{100 * lo:.1f}, {100 * hi:.1f}]</span>"
    else:
        main = num(v, 3)
        rng = "" if _missing(lo) else f" <span class=ci>[{num(lo, 3)}, {num(hi, 3)}]</span>"
    return main + rng


def table(head: Sequence[str], body: Iterable[Sequence[str]], num_cols: Iterable[int] = ()) -> str:
    """An HTML table; ``head`` is plain text (escaped here), ``body`` cells are HTML already."""
    right = set(num_cols)
    th = "".join(
        f"<th{' class=num' if i in right else ''}>{escape(h)}</th>" for i, h in enumerate(head)
    )
    rows = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in right else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in body
    )
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table></div>'


def kv_table(items: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table (keys escaped, values HTML already)."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"
