"""The runs of a local SQLite store read with the standard library only, for ``robustlab runs``
and ``robustlab show``.

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

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from robustlab.core.errors import StoreError
from robustlab.store import lease

SCHEMA_VERSION = 3  # the schema this reader knows; equal to schema.SCHEMA_VERSION (tested)
HIDDEN = ("suite", "environment", "fingerprints")  # the JSON columns Store.runs leaves out
_PLAIN = re.compile(r"[A-Za-z0-9_./+-]+")  # a path whose sqlite:/// URL prints as it is
_WAIT_S = 60.0  # as long as the store waits for another process's lock
T = TypeVar("T")


def run_rows(location: str) -> tuple[str, list[dict[str, Any]]] | None:
    """``(url, runs)``: the store's printable URL and its runs as :meth:`Store.runs` lists them
    (newest first, the status to show, without the JSON columns; ``None`` where a value is
    missing), or ``None`` where :class:`~robustlab.store.Store` must open ``location``."""
    return _read(location, lambda con: _runs(con, hidden=True))


def run_info(location: str, ref: str) -> tuple[str, dict[str, Any]] | None:
    """``(url, info)``: the run ``ref`` (an id, a unique id prefix or ``latest``) resolved and
    read as :meth:`Store.resolve` and :meth:`Store.run_info` do (JSON columns parsed, its units,
    the status to show), or ``None`` where :class:`~robustlab.store.Store` must open
    ``location``. A ``ref`` that names no run raises the store's :class:`StoreError`."""

    def info(con: sqlite3.Connection) -> dict[str, Any]:
        runs = _runs(con, hidden=False)
        run = runs[[r["id"] for r in runs].index(pick_run([r["id"] for r in runs], ref, url))]
        cur = con.execute("SELECT * FROM units WHERE run_id = ?", (run["id"],))
        names = [d[0] for d in cur.description]
        run["units"] = [dict(zip(names, values, strict=True)) for values in cur.fetchall()]
        for k in HIDDEN:
            run[k] = json.loads(run[k])
        return run

    url = _url(location)
    if url is None:
        return None
    found = _read(location, info)
    return None if found is None else (url, found[1])


def pick_run(ids: list[str], ref: str, url: str) -> str:
    """The run id ``ref`` names among ``ids`` (newest first): ``latest``, an id, or a unique id
    prefix; the store's error otherwise (one rule for :meth:`Store.resolve` and this reader)."""
    if ref == "latest":
        if not ids:
            raise StoreError(f"store {url} has no runs")
        return ids[0]
    matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise StoreError(f"no run {ref!r} in {url} (see `robustlab runs`)")
    raise StoreError(f"run prefix {ref!r} is ambiguous: {', '.join(matches[:5])}")


def _url(location: str) -> str | None:
    """The URL the store prints for ``location``, or ``None`` where the store must open it."""
    if "://" in location or not location.strip():
        return None
    p = Path(location).expanduser().absolute()
    if not _PLAIN.fullmatch(str(p)) or not p.is_file() or p.stat().st_size == 0:
        return None
    return f"sqlite:///{p}"


def _read(location: str, query: Callable[[sqlite3.Connection], T]) -> tuple[str, T] | None:
    """``(url, query(connection))`` on the store file read-only, or ``None`` where the store must
    open ``location`` (see the module's docstring)."""
    url = _url(location)
    if url is None:
        return None
    p = url[len("sqlite:///") :]
    try:
        con = sqlite3.connect(f"file:{quote(p)}?mode=ro", uri=True, timeout=_WAIT_S)
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
        return url, query(con)
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _runs(con: sqlite3.Connection, hidden: bool) -> list[dict[str, Any]]:
    """The runs, newest first, with the status to show (``hidden``: without the JSON columns)."""
    cur = con.execute("SELECT * FROM runs ORDER BY created_at DESC")
    names = [d[0] for d in cur.description]
    rows = [
        {k: v for k, v in zip(names, values, strict=True) if not (hidden and k in HIDDEN)}
        for values in cur.fetchall()
    ]
    for r in rows:  # as Store.runs shows them: a running run nobody runs is interrupted
        r["status"] = lease.state(
            r["status"], r.get("owner_host"), r.get("owner_pid"), r.get("heartbeat_at")
        )
    return rows
