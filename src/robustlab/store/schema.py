"""The results store's schema (SQLAlchemy Core), versioned; one place for every table."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

# 2: records stored per unit as blocks (store/blocks.py)
# 3: runs hold a lease -- owner host, pid and last heartbeat (store/lease.py)
SCHEMA_VERSION = 3

metadata = MetaData()

meta = Table(
    "robustlab_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("suite_name", String(200), nullable=False),
    Column("suite_hash", String(64), nullable=False, index=True),
    Column("suite", Text, nullable=False),  # JSON of the validated suite
    Column("seed", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # running | complete | failed | interrupted
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("elapsed", Float),  # seconds spent executing units, summed over resumes
    Column("environment", Text, nullable=False),  # JSON: versions, platform, hardware, engine
    Column("fingerprints", Text, nullable=False),  # JSON: model label/replicate -> hash
    Column("n_units", Integer, nullable=False),
    Column("message", Text),
    Column("owner_host", String(255)),  # schema 3: the lease (store/lease.py)
    Column("owner_pid", Integer),
    Column("heartbeat_at", Float),
)
LEASE_COLUMNS = ("owner_host", "owner_pid", "heartbeat_at")

units = Table(
    "units",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),  # done | failed
    Column("seconds", Float),
    Column("n_records", Integer),
    Column("error", Text),
    Column("finished_at", Float),
)

record_blocks = Table(
    "record_blocks",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("unit_key", String(64), primary_key=True),
    Column("n_records", Integer, nullable=False),
    Column("format", Integer, nullable=False),
    Column("block", LargeBinary, nullable=False),  # see store/blocks.py
)

# schema 1 kept one row per record; read only to migrate a version-1 store (see Store._migrate)
legacy = MetaData()
records_v1 = Table(
    "records",
    legacy,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("unit_key", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("replicate", Integer, nullable=False),
    Column("probe", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("level", Float, nullable=False),
    Column("example_id", Integer, nullable=False),
    Column("label", Text),
    Column("pred", Text),
    Column("correct", Float),
    Column("error", Text),
    Column("extra", Text),
    Column("meta", Text),
)
