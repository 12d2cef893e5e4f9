"""The results store, on SQLite and PostgreSQL: runs, atomic units, record round trips, run
references, schema versions and unreadable stores."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import random
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from robustlab.core.errors import StoreError
from robustlab.runner import run_suite
from robustlab.store import Store, lease
from robustlab.store import schema as store_schema
from robustlab.store.schema import SCHEMA_VERSION


def _new_run(st: Store, suite_hash: str = "h" * 64, name: str = "s") -> str:
    return st.create_run(
        name, suite_hash, json.dumps({"name": name}), 7, 3, {"engine": "local"}, {"m#0": "abc"}
    )


def _row(example_id: int, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "model": "m", "replicate": 0, "probe": "clean", "kind": "clean", "level": 0.0,
        "example_id": example_id, "label": "1", "pred": "1", "correct": 1.0, "error": None,
        "extra": json.dumps({}), "meta": json.dumps({}),
    }  # fmt: skip
    row.update(kw)
    return row


# runs ---------------------------------------------------------------------------------------------
def test_create_resume_and_finish_run(store: Store) -> None:
    assert store.schema_version == SCHEMA_VERSION
    assert store.runs().empty
    assert store.find_resumable("h" * 64) is None

    rid = _new_run(store)
    runs = store.runs()
    assert runs["id"].tolist() == [rid]
    assert runs.loc[0, "status"] == "running"
    assert runs.loc[0, "n_units"] == 3
    assert store.find_resumable("h" * 64) == rid
    assert store.find_resumable("x" * 64) is None

    info = store.run_info(rid)
    assert info["suite"] == {"name": "s"}
    assert info["environment"] == {"engine": "local"}
    assert info["fingerprints"] == {"m#0": "abc"}
    assert info["seed"] == 7
    assert info["units"] == []
    assert info["finished_at"] is None

    store.finish_run(rid, "failed", "1 of 3 units failed")
    assert store.find_resumable("h" * 64) == rid  # a failed run is unfinished: it resumes
    store.finish_run(rid, "complete")
    info = store.run_info(rid)
    assert info["status"] == "complete"
    assert info["message"] is None
    assert info["finished_at"] is not None
    assert store.find_resumable("h" * 64) is None  # complete runs are never resumed


def test_find_resumable_picks_the_newest_unfinished_run(store: Store) -> None:
    old = _new_run(store)
    new = _new_run(store)
    other = _new_run(store, suite_hash="o" * 64)
    assert store.find_resumable("h" * 64) == new
    store.finish_run(new, "complete")
    assert store.find_resumable("h" * 64) == old
    assert store.find_resumable("o" * 64) == other
    assert store.runs()["id"].tolist() == [other, new, old]  # newest first


def test_run_info_of_unknown_run_raises(store: Store) -> None:
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.run_info("nope")


def test_delete_run_removes_its_units_and_records(store: Store) -> None:
    a, b = _new_run(store), _new_run(store)
    store.write_unit(a, "u1", "unit 1", [_row(0), _row(1)], 0.1)
    store.write_unit(b, "u1", "unit 1", [_row(0)], 0.1)
    store.delete_run(a)
    assert store.runs()["id"].tolist() == [b]
    assert store.records(a).empty
    assert len(store.records(b)) == 1
    assert store.done_units(a) == set()


# units --------------------------------------------------------------------------------------------
def test_write_unit_replaces_the_unit_atomically(store: Store) -> None:
    rid = _new_run(store)
    store.write_unit(rid, "u1", "unit 1", [_row(i) for i in range(3)], 0.5)
    store.write_unit(rid, "u2", "unit 2", [_row(10)], 0.25)
    assert store.done_units(rid) == {"u1", "u2"}

    # rewriting a unit replaces its records and its mark (no duplicates), other units untouched
    store.write_unit(rid, "u1", "unit 1", [_row(5, pred="2", correct=0.0), _row(6)], 1.0)
    df = store.records(rid)
    assert sorted(df["example_id"]) == [5, 6, 10]
    assert df.loc[df["example_id"] == 5, "pred"].item() == "2"
    info = store.run_info(rid)
    units = {u["key"]: u for u in info["units"]}
    assert len(info["units"]) == 2
    assert units["u1"]["n_records"] == 2 and units["u1"]["status"] == "done"
    assert info["elapsed"] == pytest.approx(0.5 + 0.25 + 1.0)  # summed over writes

    # records missing a required value are refused before anything is written
    with pytest.raises(StoreError, match="'model' is missing for record 1"):
        store.write_unit(rid, "u1", "unit 1", [_row(7), _row(8, model=None)], 9.0)
    # a write that fails half-way in the database (the same unit twice in one batch: its second
    # block violates the primary key after the old unit was deleted) leaves the old unit intact
    batch = [("u1", "unit 1", [_row(7)], 9.0, None), ("u1", "unit 1", [_row(8)], 9.0, None)]
    with pytest.raises(IntegrityError):
        store.write_units(rid, batch)
    df = store.records(rid)
    assert sorted(df["example_id"]) == [5, 6, 10]
    assert store.done_units(rid) == {"u1", "u2"}
    assert store.run_info(rid)["elapsed"] == pytest.approx(1.75)


def test_failed_unit_is_not_done_and_keeps_its_error(store: Store) -> None:
    rid = _new_run(store)
    store.write_unit(rid, "u1", "unit 1", [], 0.1, error="ValueError: boom (x.py:3)")
    assert store.done_units(rid) == set()
    (unit,) = store.run_info(rid)["units"]
    assert unit["status"] == "failed"
    assert unit["error"] == "ValueError: boom (x.py:3)"
    assert unit["n_records"] == 0
    # the retry succeeds and replaces the failure
    store.write_unit(rid, "u1", "unit 1", [_row(0)], 0.1)
    assert store.done_units(rid) == {"u1"}
    assert [u["status"] for u in store.run_info(rid)["units"]] == ["done"]


def test_records_are_scoped_to_their_run(store: Store) -> None:
    a, b = _new_run(store), _new_run(store)
    store.write_unit(a, "u1", "unit 1", [_row(0), _row(1)], 0.1)
    store.write_unit(b, "u1", "unit 1", [_row(2)], 0.1)
    assert store.records(a)["example_id"].tolist() == [0, 1]
    assert store.records(b)["example_id"].tolist() == [2]
    assert store.done_units(b) == {"u1"}


# records ------------------------------------------------------------------------------------------
def test_records_round_trip(store: Store) -> None:
    rid = _new_run(store)
    rows = [
        _row(
            3, model="digits-mlp", replicate=2, probe="pgd", kind="attack", level=0.125,
            label="7", pred="1", correct=0.0,
            extra=json.dumps({"success": 1, "queries": 4, "distance": 0.1234567890123}),
            meta=json.dumps({"label": "7", "ink": "heavy"}),
        ),
        _row(
            4, model="digits-mlp", replicate=2, probe="pgd", kind="attack", level=0.125,
            label="8", pred=None, correct=float("nan"), error="ModelOutputError: bad",
            extra=json.dumps({"success": None, "queries": None, "distance": 0.0}),
            meta=json.dumps({"label": "8", "ink": "light"}),
        ),
        _row(
            5, model="digits-mlp", replicate=2, probe="pgd", kind="attack", level=0.125,
            label="9", pred=None, correct=None, error="RuntimeError: x",
            extra=json.dumps({"success": 0, "queries": 10, "distance": 1e-300}),
            meta=json.dumps({"label": "9", "ink": "medium"}),
        ),
    ]  # fmt: skip
    store.write_unit(rid, "u1", "unit 1", rows, 0.1)

    raw = store.records(rid, expand=False)
    assert list(raw.columns) == [
        "unit_key", "model", "replicate", "probe", "kind", "level", "example_id",
        "label", "pred", "correct", "error", "extra", "meta",
    ]  # fmt: skip
    assert json.loads(raw.loc[0, "extra"])["distance"] == 0.1234567890123

    df = store.records(rid)
    assert df["example_id"].tolist() == [3, 4, 5]
    assert df["unit_key"].tolist() == ["u1"] * 3
    assert df["model"].tolist() == ["digits-mlp"] * 3
    assert pd.api.types.is_integer_dtype(df["replicate"]) and df["replicate"].tolist() == [2] * 3
    assert pd.api.types.is_integer_dtype(df["example_id"])
    assert df["level"].dtype == "float64" and df["level"].tolist() == [0.125] * 3
    assert df["correct"].dtype == "float64"
    assert df.loc[0, "correct"] == 0.0
    assert math.isnan(df.loc[1, "correct"])  # NaN stays NaN
    assert math.isnan(df.loc[2, "correct"])  # None becomes NaN
    assert df["label"].tolist() == ["7", "8", "9"]  # JSON text
    assert df.loc[0, "pred"] == "1" and pd.isna(df.loc[1, "pred"])  # None (NaN in a str column)
    assert pd.isna(df.loc[0, "error"]) and df.loc[1, "error"] == "ModelOutputError: bad"
    # extra -> x.*, meta -> m.*
    assert {"x.success", "x.queries", "x.distance", "m.label", "m.ink"} <= set(df.columns)
    assert "extra" not in df and "meta" not in df
    assert df["x.distance"].tolist() == [0.1234567890123, 0.0, 1e-300]  # exact floats
    assert df.loc[0, "x.success"] == 1 and math.isnan(df.loc[1, "x.success"])
    assert df.loc[2, "x.queries"] == 10
    assert df["m.ink"].tolist() == ["heavy", "light", "medium"]
    assert df["m.label"].tolist() == ["7", "8", "9"]


def test_float_extras_round_trip_exactly(store: Store) -> None:
    rng = random.Random(0)
    values = [rng.random() * 10.0 ** rng.randint(-8, 3) for _ in range(200)]
    rid = _new_run(store)
    rows = [_row(i, extra=json.dumps({"distance": v})) for i, v in enumerate(values)]
    store.write_unit(rid, "u1", "unit 1", rows, 0.1)
    raw = store.records(rid, expand=False)
    assert [json.loads(e)["distance"] for e in raw["extra"]] == values  # stored exactly
    assert store.records(rid)["x.distance"].tolist() == values  # and expanded exactly


def test_records_of_a_run_without_records(store: Store) -> None:
    rid = _new_run(store)
    assert store.records(rid).empty
    assert store.records("no-such-run").empty


# resolving run references -------------------------------------------------------------------------
def test_resolve(store: Store) -> None:
    with pytest.raises(StoreError, match="no runs"):
        store.resolve("latest")
    a = _new_run(store)
    b = _new_run(store)
    assert store.resolve("latest") == b
    assert store.resolve(a) == a
    assert store.resolve(b) == b
    assert store.resolve(a[:-1]) == a  # a unique prefix (ids differ in their random suffix)
    assert store.resolve(b[:-1]) == b
    with pytest.raises(StoreError, match="ambiguous"):
        store.resolve(a[:4])  # both ids start with the same date
    with pytest.raises(StoreError, match="no run 'zzz'"):
        store.resolve("zzz")


# schema versions and unreadable stores ------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bump_sqlite_schema(path: Path, journal_mode: str) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "UPDATE robustlab_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute(f"PRAGMA journal_mode={journal_mode}")
    con.close()


# "wal": as robustlab writes it; "delete": e.g. written by another tool (opening must not convert it)
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_newer_schema_is_refused_and_sqlite_file_left_untouched(
    tmp_path: Path, journal_mode: str
) -> None:
    path = tmp_path / "store.db"
    st = Store(path)
    _new_run(st)
    st.engine.dispose()
    _bump_sqlite_schema(path, journal_mode)
    before = _sha(path)
    files = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(StoreError) as exc:
        Store(path)
    msg = str(exc.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in msg
    assert "newer" in msg and "upgrade robustlab" in msg
    del exc
    gc.collect()  # release the connection the refused Store still holds
    assert _sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files


@pytest.mark.postgres
def test_newer_schema_is_refused_on_postgres(pg_url: str) -> None:
    st = Store(pg_url)
    rid = _new_run(st)
    with st.engine.begin() as c:
        c.execute(
            store_schema.meta.update()
            .where(store_schema.meta.c.key == "schema_version")
            .values(value=str(SCHEMA_VERSION + 1))
        )
    st.engine.dispose()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        Store(pg_url)
    eng = sa.create_engine(pg_url)
    with eng.connect() as c:
        assert c.execute(sa.select(store_schema.meta.c.value)).scalar_one() == str(
            SCHEMA_VERSION + 1
        )
        assert c.execute(sa.select(store_schema.runs.c.id)).scalars().all() == [rid]
    eng.dispose()


def test_garbage_store_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database\x00\xff" * 200)
    before = _sha(path)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(path)
    gc.collect()
    assert _sha(path) == before


def test_unreachable_postgres_raises_store_error() -> None:
    pytest.importorskip("psycopg")
    # nothing listens on port 1; the error names the store and does not leak a traceback
    with pytest.raises(StoreError, match="cannot open store"):
        Store("postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2")


def test_store_path_creates_missing_folders(tmp_path: Path) -> None:
    st = Store(tmp_path / "a" / "b" / "store.db")
    assert (tmp_path / "a" / "b" / "store.db").is_file()
    assert st.schema_version == SCHEMA_VERSION
    st.engine.dispose()


# a whole run ---------------------------------------------------------------------------------------
@pytest.mark.postgres
def test_run_suite_into_postgres_equals_sqlite(
    pg_url: str, tmp_path: Path, small_suite, canonical_records
) -> None:
    suite = small_suite(noise_levels=[2], fgsm_eps=[0.1], pgd_eps=[0.1], pgd_steps=3)
    frames = []
    for loc in (str(tmp_path / "store.db"), pg_url):
        st = Store(loc)
        rid = run_suite(suite, st, progress=False)
        info = st.run_info(rid)
        assert info["status"] == "complete"
        assert len(info["units"]) == info["n_units"] == 12
        frames.append(canonical_records(st.records(rid, expand=False)))  # exact JSON
        st.engine.dispose()
    sqlite_df, pg_df = frames
    assert len(sqlite_df) == 4 * 360
    pd.testing.assert_frame_equal(sqlite_df, pg_df, check_exact=True)


def test_a_foreign_sqlite_database_is_refused(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a robustlab store"):
        Store(path)
    assert path.read_bytes() == before


# schema 1 -> 2 migration ---------------------------------------------------------------------------
def _version_1_store(url: str) -> None:
    """A store as robustlab 0.1 wrote it: schema 1, one row per record."""
    eng = sa.create_engine(url)
    tables = [store_schema.meta, store_schema.runs, store_schema.units]
    store_schema.metadata.create_all(eng, tables=tables)
    store_schema.legacy.create_all(eng)
    rows = [
        ("r1", "u2", "m", 0, "pgd", "attack", 0.1, 7, "3", "5", 0.0, None, '{"queries":4}', "{}"),
        ("r1", "u1", "m", 0, "clean", "clean", 0.0, 9, "1", None, None, "Boom", "{}", "{}"),
        ("r1", "u1", "m", 0, "clean", "clean", 0.0, 8, "2", "2", 1.0, None, "{}", '{"a":1}'),
        ("r2", "u1", "m", 1, "clean", "clean", 0.0, 1, "0", "0", 1.0, None, "{}", "{}"),
    ]
    names = ["run_id", "unit_key", *store_schema.records_v1.c.keys()[3:]]
    with eng.begin() as c:
        c.execute(store_schema.meta.insert().values(key="schema_version", value="1"))
        c.execute(
            store_schema.records_v1.insert(), [dict(zip(names, r, strict=True)) for r in rows]
        )
    eng.dispose()


def test_version_1_store_is_migrated_with_every_record(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v1.db'}"
    _version_1_store(url)
    st = Store(url)
    assert st.schema_version == SCHEMA_VERSION
    r1 = st.records("r1", expand=False)
    assert r1["unit_key"].tolist() == ["u1", "u1", "u2"]  # by unit, then in written order
    assert r1["example_id"].tolist() == [9, 8, 7]
    assert r1["error"].tolist()[0] == "Boom" and math.isnan(r1["correct"][0])
    assert r1["level"].tolist() == [0.0, 0.0, 0.1] and r1["extra"][2] == '{"queries":4}'
    assert st.records("r2")["replicate"].tolist() == [1]
    assert not sa.inspect(st.engine).has_table("records")  # the old table is gone
    st.close()
    assert Store(url).records("r1", expand=False).equals(r1)  # migrated once, reads the same


def test_record_blocks_round_trip_types() -> None:
    from robustlab.store import blocks

    rows = {
        "model": ["m", "m"], "replicate": [0, 0], "probe": ["p", "p"], "kind": ["k", "k"],
        "level": [0.5, 0.5], "example_id": [3, 4], "label": [7, "x"], "pred": [None, "1"],
        "correct": [float("nan"), 1], "error": [None, "e"], "extra": ["{}", "{}"],
        "meta": ["{}", '{"é":1}'],
    }  # fmt: skip
    n, block = blocks.encode(rows)
    out = blocks.decode(block, n)
    assert out["label"] == ["7", "x"]  # text columns hold text, as a TEXT column would
    assert math.isnan(out["correct"][0]) and out["correct"][1] == 1.0
    assert out["meta"][1] == '{"é":1}' and out["model"] == ["m", "m"]
    with pytest.raises(StoreError, match="'pred' has 1 values for 2"):
        blocks.encode({**rows, "pred": ["1"]})
    with pytest.raises(StoreError, match="lack the column"):
        blocks.encode({k: v for k, v in rows.items() if k != "meta"})


# run leases: a run nobody runs any more shows as interrupted --------------------------------------
def _set_lease(st: Store, rid: str, **values: object) -> None:
    with st.engine.begin() as c:
        c.execute(store_schema.runs.update().where(store_schema.runs.c.id == rid).values(**values))


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_running_run_whose_owner_is_gone_shows_interrupted_and_resumes(store: Store) -> None:
    rid = _new_run(store)
    assert store.runs()["status"].tolist() == ["running"]  # owned by this (live) process
    _set_lease(store, rid, owner_pid=_dead_pid())  # this host, process gone: at once
    assert store.runs()["status"].tolist() == ["interrupted"]
    assert store.run_info(rid)["status"] == "interrupted"
    assert store.find_resumable("h" * 64) == rid
    store.resume_run(rid, {"engine": "local"})  # resuming takes the lease over
    info = store.run_info(rid)
    assert info["status"] == "running" and info["owner_pid"] == os.getpid()


def test_a_lapsed_lease_is_interrupted_a_live_one_is_not_resumed(store: Store) -> None:
    now = time.time()
    rid = _new_run(store)
    _set_lease(store, rid, owner_host="elsewhere", owner_pid=1, heartbeat_at=now - lease.LEASE - 5)
    assert store.run_info(rid)["status"] == "interrupted"
    assert store.find_resumable("h" * 64) == rid
    # another host's run with a fresh heartbeat, or a live process here: running, never resumed
    _set_lease(store, rid, heartbeat_at=now)
    assert store.run_info(rid)["status"] == "running"
    assert store.find_resumable("h" * 64) is None
    with subprocess.Popen(["sleep", "30"]) as other:
        _set_lease(store, rid, owner_host=lease.Owner.here().host, owner_pid=other.pid)
        assert store.run_info(rid)["status"] == "running"
        assert store.find_resumable("h" * 64) is None
        other.kill()
    other.wait()
    assert store.run_info(rid)["status"] == "interrupted"
    assert store.find_resumable("h" * 64) == rid
    store.finish_run(rid, "failed", "1 of 3 units failed")  # stored states are shown as they are
    _set_lease(store, rid, owner_pid=_dead_pid())
    assert store.run_info(rid)["status"] == "failed"


def test_the_writer_renews_the_lease_while_units_run(store: Store) -> None:
    from robustlab.runner.writer import UnitWriter

    rid = _new_run(store)
    _set_lease(store, rid, heartbeat_at=0.0)
    with UnitWriter(store, rid, heartbeat=0.05):
        deadline = time.time() + 30
        while store.run_info(rid)["heartbeat_at"] == 0.0 and time.time() < deadline:
            time.sleep(0.05)  # idle: the writer beats on its own
    beat = store.run_info(rid)["heartbeat_at"]
    assert time.time() - 30 < beat <= time.time()
    _set_lease(store, rid, heartbeat_at=0.0)
    store.write_unit(rid, "u1", "unit 1", [_row(0)], 0.1)  # every write renews it too
    assert store.run_info(rid)["heartbeat_at"] > 0


def test_version_2_store_is_migrated_to_leases(store_url: str) -> None:
    st = Store(store_url)
    rid = _new_run(st)
    st.write_unit(rid, "u1", "unit 1", [_row(0), _row(1)], 0.1)
    with st.engine.begin() as c:  # back to schema 2: no lease columns
        for col in store_schema.LEASE_COLUMNS:
            c.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {col}")
        c.execute(store_schema.meta.update().values(value="2"))
    st.close()
    st = Store(store_url)
    assert st.schema_version == SCHEMA_VERSION == 3
    cols = {c["name"] for c in sa.inspect(st.engine).get_columns("runs")}
    assert set(store_schema.LEASE_COLUMNS) <= cols
    assert st.run_info(rid)["status"] == "interrupted"  # a run stored without a lease
    assert st.records(rid)["example_id"].tolist() == [0, 1]
    assert st.find_resumable("h" * 64) == rid
    st.resume_run(rid, {})
    assert st.run_info(rid)["status"] == "running"
    st.close()
