"""The runs of a local SQLite store read with the standard library only, for ``robustlab runs``.

Opening a :class:`~robustlab.store.Store` imports SQLAlchemy and pandas (about half a second, more
than the rest of the command). Listing the runs of an existing store file needs neither: this
reads the same rows as :meth:`Store.runs` with :mod:`sqlite3`, read-only, and answers ``None``
wherever the full store must open the location instead, so that every check, refusal, migration
and message stays the store's: a URL (``sqlite://`` ones too), a path that is not an existing
non-empty file, a path whose URL the store would print differently, a database without this
version's schema (missing, older, newer or foreign), or one SQLite cannot open read-only.

Example::

    run_rows("robustlab-runs/store.db")   # ('sqlite:////abs/robustlab-runs/store.db', [{...}, ...])
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from robustlab.store import lease

SCHEMA_VERSION = 3  # the schema this reader knows; equal to schema.SCHEMA_VERSION (tested)
HIDDEN = ("suite", "environment", "fingerprints")  # the JSON columns Store.runs leaves out
_PLAIN = re.compile(r"[A-Za-z0-9_./+-]+")  # a path whose sqlite:/// URL prints as it is
_WAIT_S = 60.0  # as long as the store waits for another process's lock


def run_rows(location: str) -> tuple[str, list[dict[str, Any]]] | None:
    """``(url, runs)``: the store's printable URL and its runs as :meth:`Store.runs` lists them
    (newest first, the status to show, without the JSON columns; ``None`` where a value is
    missing), or ``None`` where :class:`~robustlab.store.Store` must open ``location``."""
    if "://" in location or not location.strip():
        return None
    p = Path(location).expanduser().absolute()
    if not _PLAIN.fullmatch(str(p)) or not p.is_file() or p.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{quote(str(p))}?mode=ro", uri=True, timeout=_WAIT_S)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "robustlab_meta" not in tables or "runs" not in tables:
            return None
        row = con.execute(
            "SELECT value FROM robustlab_meta WHERE key = 'schema_version'"
        ).fetchone()
        if row is None or str(row[0]) != str(SCHEMA_VERSION):
            return None
        cur = con.execute("SELECT * FROM runs ORDER BY created_at DESC")
        names = [d[0] for d in cur.description]
        rows = [
            {k: v for k, v in zip(names, values, strict=True) if k not in HIDDEN}
            for values in cur.fetchall()
        ]
    except sqlite3.Error:
        return None
    finally:
        con.close()
    for r in rows:  # as Store.runs shows them: a running run nobody runs is interrupted
        r["status"] = lease.state(
            r["status"], r.get("owner_host"), r.get("owner_pid"), r.get("heartbeat_at")
        )
    return f"sqlite:///{p}", rows
