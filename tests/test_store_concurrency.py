"""Several processes opening one *fresh* store at the same moment (runs started together): every
one of them gets a working store, with one schema and one version row (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing as mp
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from robustlab.store import Store
from robustlab.store import schema as store_schema
from robustlab.store.schema import SCHEMA_VERSION

N_PROCS = 4
ROUNDS = 10  # each round a fresh store: the journal-mode race (issue 16) showed in ~1 of 100 opens


def _open_and_run(locations: list[str], barrier, results) -> None:  # type: ignore[no-untyped-def]
    """In a child: for each location, wait for the others, then open the store and add a run."""
    for loc in locations:
        barrier.wait(timeout=120)
        try:
            st = Store(loc)
            st.create_run("s", "h" * 64, "{}", 0, 1, {}, {})
            st.close()
            results.put((loc, "ok"))
        except Exception as e:  # noqa: BLE001 - reported to the parent
            results.put((loc, f"{type(e).__name__}: {e}"))


def _race(locations: list[str]) -> dict[str, list[str]]:
    ctx = mp.get_context("fork")  # no re-import per child: all start the race together
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [
        ctx.Process(target=_open_and_run, args=(locations, barrier, results))
        for _ in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    got: dict[str, list[str]] = {loc: [] for loc in locations}
    for _ in range(N_PROCS * len(locations)):
        loc, outcome = results.get(timeout=300)
        got[loc].append(outcome)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return got


def _check(locations: list[str]) -> None:
    outcomes = _race(locations)
    for loc in locations:
        assert outcomes[loc] == ["ok"] * N_PROCS, outcomes[loc]
        st = Store(loc)
        assert st.schema_version == SCHEMA_VERSION
        assert len(st.runs()) == N_PROCS
        with st.engine.connect() as c:
            assert (
                c.execute(sa.select(sa.func.count()).select_from(store_schema.meta)).scalar() == 1
            )
        st.close()


def test_processes_creating_one_fresh_sqlite_store_at_once(tmp_path: Path) -> None:
    _check([str(tmp_path / f"s{i}" / "store.db") for i in range(ROUNDS)])


@pytest.fixture
def fresh_pg_databases(pg_server_url: str) -> Iterator[list[str]]:
    base = sa.make_url(pg_server_url)
    names = [f"rl_race_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            for n in names:
                c.execute(sa.text(f'CREATE DATABASE "{n}"'))
        yield [base.set(database=n).render_as_string(hide_password=False) for n in names]
    finally:
        with admin.connect() as c:
            for n in names:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_processes_creating_one_fresh_postgres_store_at_once(fresh_pg_databases: list[str]) -> None:
    _check(fresh_pg_databases)
