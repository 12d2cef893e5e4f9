"""The accuracy table ``robustlab run`` prints, kept so that ``robustlab show`` need not read the
records again (reading them imports SQLAlchemy and pandas, summarising them draws bootstrap
resamples: about a second before the first line, where the rest of ``show`` takes 0.2 s).

A table is saved as JSON (never a pickle) in ``cache_dir()/summaries/``, one file per store URL
and run id, beside a digest of the run's units (key, status, record count, finish time). A unit is
written with its records in one transaction, so the units a reader sees before it reads the records
name every record it then summarises: a table is only shown while the run's units are exactly the
ones it was computed from. A resumed, re-run or deleted unit changes the digest and the table is
computed afresh. A file that cannot be read, names another run, or has another layout is ignored
(and replaced on the next save); one that cannot be written is skipped. The output is the same
either way.

Example::

    load("sqlite:////abs/store.db", run_id, info["units"])   # {"title": ..., "rows": [...]} | None
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustlab.core.paths import cache_dir, write_text_atomic

FORMAT = 1  # bump when the table's layout changes


def units_digest(units: Sequence[dict[str, Any]]) -> str:
    """A digest of the run's units as they determine its records."""
    rows = sorted([u["key"], u["status"], u.get("n_records"), u.get("finished_at")] for u in units)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def path(url: str, run_id: str) -> Path:
    """The file holding the table of run ``run_id`` in the store at ``url``."""
    name = hashlib.sha256(f"{url}\0{run_id}".encode()).hexdigest()[:32]
    return cache_dir() / "summaries" / f"{name}.json"


def load(url: str, run_id: str, units: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The table saved for these exact ``units`` of the run, else ``None``."""
    try:
        entry = json.loads(path(url, run_id).read_text())
    except (OSError, ValueError):
        return None
    want = {"format": FORMAT, "url": url, "run_id": run_id, "units": units_digest(units)}
    if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in want.items()):
        return None
    table = entry.get("table")
    return table if isinstance(table, dict) else None


def save(url: str, run_id: str, units: Sequence[dict[str, Any]], table: dict[str, Any]) -> None:
    """Keep ``table`` for these ``units`` of the run (atomically; skipped if not writable)."""
    entry = {
        "format": FORMAT,
        "url": url,
        "run_id": run_id,
        "units": units_digest(units),
        "table": table,
    }
    write_text_atomic(path(url, run_id), json.dumps(entry))
