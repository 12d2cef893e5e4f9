"""Record blocks: a unit's records stored as one compressed, columnar JSON value.

A work unit emits hundreds to thousands of records at once and they are only ever read back whole
(by run), so the store keeps each unit's records as one block (one row of ``record_blocks``) instead
of one row per record: writing a unit is one INSERT, which keeps the background writer from
competing with the model for the interpreter (issue 2's runner-overhead target).

The block is ``zlib(JSON({column: values}))``; a column whose values are all equal (model, probe,
kind, level of a unit) is stored once as ``{"const": value}``. JSON is the encoding because it is
safe to load from any file (no pickle) and round-trips floats exactly (``repr`` precision; NaN is
kept). Text columns hold text: other values are converted with ``str`` as a TEXT column would.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from robustlab.core.errors import StoreError
from robustlab.core.records import COLUMNS

FORMAT = 1
REQUIRED = ("model", "replicate", "probe", "kind", "level", "example_id")
TEXT = ("model", "probe", "kind", "label", "pred", "error", "extra", "meta")
_FLOAT = ("level", "correct")
_INT = ("replicate", "example_id")


def encode(rows: dict[str, list[Any]]) -> tuple[int, bytes]:
    """``(number of records, block)`` of columnar records; refuses missing or ragged columns."""
    missing = [k for k in COLUMNS if k not in rows]
    if missing:
        raise StoreError(f"records lack the column(s) {', '.join(missing)}")
    n = len(rows["model"])
    cols: dict[str, Any] = {}
    for k in COLUMNS:
        vals = list(rows[k])
        if len(vals) != n:
            raise StoreError(f"record column {k!r} has {len(vals)} values for {n} records")
        if k in REQUIRED and None in vals:
            raise StoreError(f"record column {k!r} is missing for record {vals.index(None)}")
        vals = _normalise(k, vals)
        cols[k] = {"const": vals[0]} if n and vals.count(vals[0]) == n else vals
    text = json.dumps(cols, separators=(",", ":"), ensure_ascii=False)
    return n, zlib.compress(text.encode(), 1)


def decode(block: bytes, n: int) -> dict[str, list[Any]]:
    """The columns of a block with ``n`` records."""
    cols = json.loads(zlib.decompress(block))
    return {
        k: [v["const"]] * n if isinstance(v, dict) else v
        for k, v in ((k, cols[k]) for k in COLUMNS)
    }


def _normalise(col: str, vals: list[Any]) -> list[Any]:
    """Values as the column's type (what a typed SQL column would have stored)."""
    types = set(map(type, vals))
    if col in TEXT:
        if types <= {str, type(None)}:
            return vals
        return [None if v is None else str(v) for v in vals]
    if col in _INT:
        return vals if types <= {int} else list(map(int, vals))
    if types <= {float}:
        return vals
    return list(map(float, vals)) if type(None) not in types else [_float(v) for v in vals]


def _float(v: Any) -> float | None:
    return None if v is None else float(v)
