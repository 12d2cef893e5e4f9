"""The results store: runs, their work units and per-example records, in any SQLAlchemy database.

Records are stored per unit as one compressed columnar block (:mod:`robustlab.store.blocks`);
:meth:`Store.records` is the way to read them (a DataFrame of the tidy record format).

SQLite (a file path) by default; any SQLAlchemy URL works (e.g. ``postgresql+psycopg://...``).
A unit's records and its ``done`` mark are written in one transaction, so a run killed at any
moment leaves either all of a unit or none of it, and a rerun resumes with the missing units.
"""

from __future__ import annotations

import json
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import DatabaseError, OperationalError

from robustlab.core.errors import StoreError
from robustlab.core.records import COLUMNS, frame
from robustlab.store import blocks, schema
from robustlab.store.schema import SCHEMA_VERSION


def _url(location: str | Path) -> str:
    s = str(location)
    if "://" in s:
        return s
    p = Path(s).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


class Store:
    """Open (creating if needed) a results store at a path or SQLAlchemy URL."""

    def __init__(self, location: str | Path) -> None:
        self.url = _url(location)
        self.engine = sa.create_engine(self.url, future=True)
        if self.url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # closing the last connection checkpoints SQLite's WAL into the file (also at exit)
        self._finalizer = weakref.finalize(self, self.engine.dispose)
        try:
            self._open()
        except (OperationalError, DatabaseError) as e:
            self.engine.dispose()
            raise StoreError(f"cannot open store {location}: {e.orig or e}") from None
        except StoreError:
            self.engine.dispose()
            raise

    def _open(self) -> None:
        insp = sa.inspect(self.engine)
        if not insp.has_table(schema.meta.name):
            if insp.get_table_names():
                raise StoreError(
                    f"{self.url} is a database of something else (tables "
                    f"{', '.join(sorted(insp.get_table_names())[:5])}), not a robustlab store; "
                    "point --store at a new file or an empty database"
                )
            schema.metadata.create_all(self.engine)
            with self.engine.begin() as c:
                c.execute(
                    schema.meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )
            self._use_wal()
            return
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).first()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} has schema version {version}, newer than this robustlab's "
                f"{SCHEMA_VERSION}: upgrade robustlab to read it (the store was left untouched)"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)
        self._use_wal()

    def _use_wal(self) -> None:
        """Write-ahead logging for SQLite (persistent in the file): only once the schema is ours."""
        if self.url.startswith("sqlite"):
            raw = self.engine.raw_connection()  # outside any transaction, or SQLite ignores it
            try:
                cur = raw.cursor()
                if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.close()
            finally:
                raw.close()

    def _migrate(self, version: int) -> None:
        """Upgrade an older store in place, one version step per function, each one transaction."""
        steps = {1: self._migrate_1_to_2}
        if version not in steps:
            raise StoreError(f"store {self.url} has unknown schema version {version}")
        while version < SCHEMA_VERSION:
            steps[version]()
            version += 1

    def _migrate_1_to_2(self) -> None:
        """Schema 1 -> 2: the per-record rows of each unit become one record block."""
        old = schema.records_v1
        with self.engine.begin() as c:
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
        with self.engine.begin() as c:
            c.execute(
                schema.runs.insert().values(
                    id=run_id, suite_name=suite_name, suite_hash=suite_hash, suite=suite_json,
                    seed=seed, status="running", created_at=time.time(), elapsed=0.0,
                    environment=json.dumps(environment), fingerprints=json.dumps(fingerprints),
                    n_units=n_units,
                )
            )  # fmt: skip
        return run_id

    def find_resumable(self, suite_hash: str) -> str | None:
        """The newest unfinished run of the same suite, if any."""
        q = (
            sa.select(schema.runs.c.id)
            .where(schema.runs.c.suite_hash == suite_hash, schema.runs.c.status != "complete")
            .order_by(schema.runs.c.created_at.desc())
        )
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return row[0] if row else None

    def resume_run(self, run_id: str, environment: dict[str, Any]) -> None:
        """Mark an unfinished run as running again, recording the resuming environment."""
        with self.engine.begin() as c:
            c.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id)
                .values(status="running", message=None, environment=json.dumps(environment))
            )

    def finish_run(self, run_id: str, status: str, message: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(
                schema.runs.update()
                .where(schema.runs.c.id == run_id)
                .values(status=status, finished_at=time.time(), message=message)
            )

    def runs(self) -> pd.DataFrame:
        """All runs, newest first (without the suite JSON)."""
        cols = [c for c in schema.runs.c if c.name not in ("suite", "environment", "fingerprints")]
        with self.engine.connect() as c:
            rows = c.execute(sa.select(*cols).order_by(schema.runs.c.created_at.desc())).mappings()
            df = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in cols])
        return df

    def resolve(self, ref: str) -> str:
        """A run id from an id, a unique id prefix, or ``latest``."""
        ids = self.runs()["id"].tolist()
        if ref == "latest":
            if not ids:
                raise StoreError(f"store {self.url} has no runs")
            return ids[0]
        matches = [i for i in ids if i == ref] or [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no run {ref!r} in {self.url} (see `robustlab runs`)")
        raise StoreError(f"run prefix {ref!r} is ambiguous: {', '.join(matches[:5])}")

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
        return info

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
                .values(elapsed=schema.runs.c.elapsed + sum(u[3] for u in units))
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
        df = pd.DataFrame(cols)
        if df.empty:
            return pd.DataFrame(columns=list(cols))
        df["correct"] = df["correct"].astype("float64")
        return frame(df) if expand else df

    def delete_run(self, run_id: str) -> None:
        with self.engine.begin() as c:
            for t in (schema.record_blocks, schema.units):
                c.execute(t.delete().where(t.c.run_id == run_id))
            c.execute(schema.runs.delete().where(schema.runs.c.id == run_id))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # per-connection only: nothing here writes to the file (a store we refuse stays untouched)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
