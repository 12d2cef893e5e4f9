"""The results store: runs, their work units and per-example records, in any SQLAlchemy database.

Records are stored per unit as one compressed columnar block (:mod:`robustlab.store.blocks`);
:meth:`Store.records` is the way to read them (a DataFrame of the tidy record format).

SQLite (a file path) by default; any SQLAlchemy URL works (e.g. ``postgresql+psycopg://...``).
A unit's records and its ``done`` mark are written in one transaction, so a run killed at any
moment leaves either all of a unit or none of it, and a rerun resumes with the missing units.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sqlite3
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, DatabaseError, InterfaceError, OperationalError

from robustlab.core.errors import StoreError
from robustlab.core.records import COLUMNS, frame
from robustlab.store import blocks, lease, schema
from robustlab.store import location as location_
from robustlab.store.readonly import pick_run
from robustlab.store.schema import SCHEMA_VERSION

_LOCK_KEY = 0x726F627573746C62  # PostgreSQL advisory lock of store creation/migration ("robustlb")
_SQLITE_WAIT_S = 60.0  # how long a SQLite store waits for another process's lock before it fails


class Store:
    """Open (creating if needed) a results store at a path or SQLAlchemy URL.

    ``url`` is safe to print (password masked); ``connect_url`` holds the credentials, for
    worker processes only (never print, log or store it).
    """

    def __init__(self, location: str | Path) -> None:
        self.connect_url = location_.resolve(location)
        self.url = location_.masked(self.connect_url)
        try:
            self.engine = sa.create_engine(self.connect_url, future=True, **_engine_args(self.url))
        except (ArgumentError, ImportError, ValueError) as e:
            raise StoreError(_bad_url(self.url, e)) from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # closing the last connection checkpoints SQLite's WAL into the file (also at exit)
        self._finalizer = weakref.finalize(self, self.engine.dispose)
        try:
            self._open()
        except (OperationalError, DatabaseError, InterfaceError) as e:
            self.engine.dispose()
            why = location_.one_line(e.orig or e, self.connect_url)
            raise StoreError(f"cannot open store {self.url}: {why}") from None
        except StoreError:
            self.engine.dispose()
            raise

    def _open(self) -> None:
        """Check (and create or migrate) the schema. Creation and migration run under a lock
        that excludes every other process opening the store (SQLite: ``BEGIN IMMEDIATE``;
        PostgreSQL: a transaction-scoped advisory lock), so that tables and their version row
        appear together, once, however many runs start at the same moment."""
        with self.engine.connect() as c:
            version = self._version(c)  # without the lock: refusals never write
        if version != SCHEMA_VERSION:
            with self._exclusive() as c:
                version = self._version(c)  # again: another process may have done it meanwhile
                if version is None:
                    schema.metadata.create_all(c)
                    c.execute(
                        schema.meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                    )
                elif version < SCHEMA_VERSION:
                    self._migrate(c, version)
        self._use_wal()

    def _version(self, c: sa.Connection) -> int | None:
        """The store's schema version (``None``: an empty database); refuses foreign databases
        and newer schemas."""
        names = sa.inspect(c).get_table_names()  # one read: tables appear all at once
        if schema.meta.name not in names:
            if names:
                raise StoreError(
                    f"{self.url} is a database of something else (tables "
                    f"{', '.join(sorted(names)[:5])}), not a robustlab store; "
                    "point --store at a new file or an empty database"
                )
            return None
        row = c.execute(
            sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
        ).first()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} has schema version {version}, newer than this robustlab's "
                f"{SCHEMA_VERSION}: upgrade robustlab to read it (the store was left untouched)"
            )
        return version

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[sa.Connection]:
        """A connection in a transaction no other creator or migrator of this store can enter;
        committed at the end of the block, rolled back on an error."""
        with self.engine.connect() as c:
            dialect = self.engine.dialect.name
            if dialect == "sqlite":  # the write lock now (pysqlite would not BEGIN before DDL)
                c.exec_driver_sql("BEGIN IMMEDIATE")
            elif dialect == "postgresql":
                c.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            yield c
            c.commit()

    def _use_wal(self) -> None:
        """Write-ahead logging for SQLite (persistent in the file): only once the schema is ours.

        Switching the journal mode needs the file to itself, and SQLite answers "database is
        locked" at once (its busy timeout does not apply) while another process that opens the
        same fresh store holds a read lock: retry with a jittered back-off, within the same 60 s
        a writer waits for the lock."""
        if self.engine.dialect.name != "sqlite":
            return
        deadline = time.monotonic() + _SQLITE_WAIT_S
        pause = 0.005
        while True:
            raw = self.engine.raw_connection()  # outside any transaction, or SQLite ignores it
            try:
                cur = raw.cursor()
                if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.close()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if time.monotonic() > deadline:
                    raise
            finally:
                raw.close()
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.2)

    def _migrate(self, c: sa.Connection, version: int) -> None:
        """Upgrade an older store in place, one version step per function, all in the caller's
        (locked) transaction: a failed migration leaves the store as it was."""
        steps = {1: _migrate_1_to_2, 2: _migrate_2_to_3}
        if version not in steps:
            raise StoreError(f"store {self.url} has unknown schema version {version}")
        while version < SCHEMA_VERSION:
            steps[version](c)
            version += 1
        c.execute(
            schema.meta.update()
            .where(schema.meta.c.key == "schema_version")
            .values(value=str(SCHEMA_VERSION))
        )

    def close(self) -> None:
        """Close all connections (SQLite then folds its write-ahead log into the store file)."""
        self._finalizer()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as c:
            return int(
                c.execute(
                    sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
                ).scalar_one()
            )

    # runs -------------------------------------------------------------------------------------
    def create_run(
        self,
        suite_name: str,
        suite_hash: str,
        suite_json: str,
        seed: int,
        n_units: int,
        environment: dict[str, Any],
        fingerprints: dict[str, str],
    ) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        now = time.time()
        with self.engine.begin() as c:
            c.execute(
                schema.runs.insert().values(
                    id=run_id, suite_name=suite_name, suite_hash=suite_hash, suite=suite_json,
                    seed=seed, status="running", created_at=now, elapsed=0.0,
                    environment=json.dumps(environment), fingerprints=json.dumps(fingerprints),
                    n_units=n_units, **_lease(now),
                )
            )  # fmt: skip
        return run_id

    def find_resumable(self, suite_hash: str) -> str | None:
        """The newest unfinished run of the same suite, if any, that no other live process runs
        (its lease lapsed or its owner is gone: see :mod:`robustlab.store.lease`)."""
        r = schema.runs.c
        q = (
            sa.select(r.id, r.status, r.owner_host, r.owner_pid, r.heartbeat_at)
            .where(r.suite_hash == suite_hash, r.status != "complete")
            .order_by(r.created_at.desc())
        )
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        me, now = lease.Owner.here(), time.time()
        for run_id, status, host, pid, beat in rows:
            mine = (host, pid) == (me.host, me.pid)
            if status != "running" or mine or not lease.live(host, pid, beat, now):
                return run_id
        return None

    def resume_run(self, run_id: str, environment: dict[str, Any]) -> None:
        """Mark an unfinished run as running again (owned by this process), recording the
        resuming environment."""
        with self.engine.begin() as c:
            c.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id)
                .values(status="running", message=None, environment=json.dumps(environment),
                        **_lease(time.time()))
            )  # fmt: skip

    def heartbeat(self, run_id: str) -> None:
        """Renew this process's lease on a running run (see :mod:`robustlab.store.lease`)."""
        with self.engine.begin() as c:
            c.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id)
                .values(heartbeat_at=time.time())
            )

    def finish_run(self, run_id: str, status: str, message: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id)
                .values(status=status, finished_at=time.time(), message=message)
            )

    def runs(self) -> pd.DataFrame:
        """All runs, newest first (without the suite JSON). ``status`` is the status to show:
        a ``running`` run that nobody runs any more reads ``interrupted``. Columns hold Python
        objects, ``None`` where a value is missing (never NaN: safe to format and print)."""
        cols = [c for c in schema.runs.c if c.name not in ("suite", "environment", "fingerprints")]
        with self.engine.connect() as c:
            rows = c.execute(sa.select(*cols).order_by(schema.runs.c.created_at.desc())).mappings()
            records = [_shown(dict(r)) for r in rows]
        return pd.DataFrame(
            {c.name: pd.Series([r[c.name] for r in records], dtype=object) for c in cols}
        )

    def resolve(self, ref: str) -> str:
        """A run id from an id, a unique id prefix, or ``latest``."""
        return pick_run(self.runs()["id"].tolist(), ref, self.url)

    def run_info(self, run_id: str) -> dict[str, Any]:
        with self.engine.connect() as c:
            row = (
                c.execute(sa.select(schema.runs).where(schema.runs.c.id == run_id))
                .mappings()
                .first()
            )
            if row is None:
                raise StoreError(f"no run {run_id!r} in {self.url}")
            info = dict(row)
            units = c.execute(
                sa.select(schema.units).where(schema.units.c.run_id == run_id)
            ).mappings()
            info["units"] = [dict(u) for u in units]
        for k in ("suite", "environment", "fingerprints"):
            info[k] = json.loads(info[k])
        return _shown(info)

    # units and records ------------------------------------------------------------------------
    def done_units(self, run_id: str) -> set[str]:
        q = sa.select(schema.units.c.key).where(
            schema.units.c.run_id == run_id, schema.units.c.status == "done"
        )
        with self.engine.connect() as c:
            return {r[0] for r in c.execute(q)}

    def write_unit(
        self,
        run_id: str,
        key: str,
        description: str,
        rows: dict[str, list[Any]] | list[dict[str, Any]],
        seconds: float,
        error: str | None = None,
    ) -> None:
        """Atomically replace a unit's records and mark it done (or failed, with ``error``).

        ``rows`` is columnar (column -> values, as units produce them) or a list of row dicts.
        """
        self.write_units(run_id, [(key, description, rows, seconds, error)])

    def write_units(
        self,
        run_id: str,
        units: list[
            tuple[str, str, dict[str, list[Any]] | list[dict[str, Any]], float, str | None]
        ],
    ) -> None:
        """Write several finished units ``(key, description, rows, seconds, error)`` in one
        transaction: each unit is stored whole or not at all."""
        keys = [u[0] for u in units]
        block_rows, unit_rows = [], []
        now = time.time()
        for key, description, rows, seconds, error in units:
            if isinstance(rows, list):
                rows = {k: [r.get(k) for r in rows] for k in COLUMNS}
            n = 0
            if rows and len(rows["model"]):
                n, block = blocks.encode(rows)
                block_rows.append(
                    {"run_id": run_id, "unit_key": key, "n_records": n,
                     "format": blocks.FORMAT, "block": block}
                )  # fmt: skip
            unit_rows.append(
                {"run_id": run_id, "key": key, "description": description,
                 "status": "failed" if error else "done", "seconds": seconds,
                 "n_records": n, "error": error, "finished_at": now}
            )  # fmt: skip
        rb = schema.record_blocks
        with self.engine.begin() as c:
            c.execute(rb.delete().where(rb.c.run_id == run_id, rb.c.unit_key.in_(keys)))
            c.execute(
                schema.units.delete().where(
                    schema.units.c.run_id == run_id, schema.units.c.key.in_(keys)
                )
            )
            if block_rows:
                c.execute(rb.insert(), block_rows)
            c.execute(schema.units.insert(), unit_rows)
            c.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id)
                .values(elapsed=schema.runs.c.elapsed + sum(u[3] for u in units), heartbeat_at=now)
            )

    def records(self, run_id: str, expand: bool = True) -> pd.DataFrame:
        """A run's records, ordered by unit and example (expanded with :func:`frame`)."""
        rb = schema.record_blocks
        q = (
            sa.select(rb.c.unit_key, rb.c.n_records, rb.c.format, rb.c.block)
            .where(rb.c.run_id == run_id)
            .order_by(rb.c.unit_key)
        )
        cols: dict[str, list[Any]] = {k: [] for k in ("unit_key", *COLUMNS)}
        with self.engine.connect() as c:
            for key, n, fmt, block in c.execute(q):
                if fmt != blocks.FORMAT:
                    raise StoreError(f"unit {key} of run {run_id} has record format {fmt}")
                cols["unit_key"] += [key] * n
                for k, vals in blocks.decode(bytes(block), n).items():
                    cols[k] += vals
        if not cols["model"]:
            return pd.DataFrame(columns=list(cols))
        json_cols = ("extra", "meta")
        if expand and all(set(map(type, cols[k])) == {str} for k in json_cols):
            # the expansion of frame(), parsing each distinct JSON text once (a run's meta repeats
            # per example and most extras are "{}"): the same columns, values and dtypes
            parts = [
                _expand_json(cols.pop(k)).add_prefix(p)
                for k, p in zip(json_cols, ("x.", "m."), strict=True)
            ]
            df = pd.DataFrame(cols)
            df["correct"] = df["correct"].astype("float64")
            return frame(pd.concat([df, *parts], axis=1))
        df = pd.DataFrame(cols)
        df["correct"] = df["correct"].astype("float64")
        return frame(df) if expand else df

    def delete_run(self, run_id: str) -> None:
        with self.engine.begin() as c:
            for t in (schema.record_blocks, schema.units):
                c.execute(t.delete().where(t.c.run_id == run_id))
            c.execute(schema.runs.delete().where(schema.runs.c.id == run_id))


def _expand_json(texts: list[str]) -> pd.DataFrame:
    """JSON object texts (one per record) as columns: the distinct texts parsed in one
    ``read_json`` call (as :func:`robustlab.core.records.frame` parses all of them), then spread
    back to the records by their codes."""
    codes, uniques = pd.factorize(np.asarray(texts, dtype=object))
    if all(u == "{}" for u in uniques):
        return pd.DataFrame(index=range(len(texts)))
    text = "\n".join(u if u else "{}" for u in uniques)
    table = pd.read_json(io.StringIO(text), lines=True, dtype=False, precise_float=True)
    return table.take(codes).reset_index(drop=True)


def _lease(now: float) -> dict[str, Any]:
    me = lease.Owner.here()
    return {"owner_host": me.host, "owner_pid": me.pid, "heartbeat_at": now}


def _shown(run: dict[str, Any]) -> dict[str, Any]:
    """A run row with the status to show (``interrupted`` for a running run nobody runs)."""
    run["status"] = lease.state(
        run["status"], run.get("owner_host"), run.get("owner_pid"), run.get("heartbeat_at")
    )
    return run


def _migrate_1_to_2(c: sa.Connection) -> None:
    """Schema 1 -> 2: the per-record rows of each unit become one record block."""
    old = schema.records_v1
    schema.record_blocks.create(c)
    keys = c.execute(sa.select(old.c.run_id, old.c.unit_key).distinct()).all()
    for run_id, key in keys:
        q = (
            sa.select(*[old.c[k] for k in COLUMNS])
            .where(old.c.run_id == run_id, old.c.unit_key == key)
            .order_by(old.c.id)
        )
        rows = c.execute(q).all()
        n, block = blocks.encode({k: [r[i] for r in rows] for i, k in enumerate(COLUMNS)})
        c.execute(
            schema.record_blocks.insert().values(
                run_id=run_id, unit_key=key, n_records=n, format=blocks.FORMAT, block=block
            )
        )
    old.drop(c)


def _migrate_2_to_3(c: sa.Connection) -> None:
    """Schema 2 -> 3: runs get their lease columns (empty: old running runs show interrupted)."""
    have = {col["name"] for col in sa.inspect(c).get_columns(schema.runs.name)}
    for name in schema.LEASE_COLUMNS:
        if name not in have:
            col = schema.runs.c[name]
            kind = col.type.compile(dialect=c.dialect)
            c.exec_driver_sql(f"ALTER TABLE {schema.runs.name} ADD COLUMN {name} {kind}")


def _engine_args(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):  # wait (not fail) while another process holds the write lock
        return {"connect_args": {"timeout": _SQLITE_WAIT_S}}
    return {}


def _bad_url(url: str, e: Exception) -> str:
    if isinstance(e, ImportError):
        return f"cannot open store {url}: its database driver is not installed ({e})"
    if isinstance(e, ValueError) and not isinstance(e, ArgumentError):
        return f"cannot open store {url}: malformed URL ({location_.one_line(e)})"
    name = url.split("://", 1)[0]
    kind = (
        f"database driver {name.split('+', 1)[1]!r}" if "+" in name else f"database kind {name!r}"
    )
    return (
        f"cannot open store {url}: unknown {kind} (use a file path, or a "
        "SQLAlchemy URL such as sqlite:///runs.db or postgresql+psycopg://user@host/db)"
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # per-connection only: nothing here writes to the file (a store we refuse stays untouched)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
