"""A key-value response cache inside the results store's own database (LLM completions, API calls).

The cache is one extra table, ``robustlab_cache(namespace, key, value, created)``, created on
demand in a robustlab store (SQLite in WAL mode or PostgreSQL: any URL :class:`Store` opens). The
store is opened first, so an empty database becomes a robustlab store and a foreign database is
refused exactly as :class:`Store` refuses it; the store's schema checks only look at its own
tables, so the extra table never makes a store unreadable. Keeping responses next to the records
makes a run's database self-contained: copy the file and a rerun costs no model calls.

Values are JSON. Writes ignore keys already present (the first answer stays), so concurrent
writers (threads, Ray workers on one SQLite file or a PostgreSQL server) never conflict.

The *active store* is the database of the run in progress: the runner calls
:func:`set_active_store` with the store's URL when a run starts, engine workers in other
processes inherit it through ``$ROBUSTLAB_ACTIVE_STORE``, and adapters with a store cache call
:func:`active_cache` on each batch (``None`` when no run is active: they fall back to disk).

Example::

    cache = ResponseCache("results.db")
    cache.put_many("http:ab12", {"k1": {"text": "Paris"}})
    cache.get_many("http:ab12", ["k1", "k2"])   # -> {"k1": {"text": "Paris"}}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DatabaseError

from robustlab.core.errors import ConfigError
from robustlab.store.store import Store

ENV = "ROBUSTLAB_ACTIVE_STORE"
_CHUNK = 500  # keys per IN (...) query: far below every driver's parameter limit

_meta = sa.MetaData()
cache_table = sa.Table(
    "robustlab_cache",
    _meta,
    sa.Column("namespace", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


def cache_key(*parts: Any) -> str:
    """SHA-256 (hex) of the JSON of ``parts`` (sorted keys): a stable key for a request."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()  # ASCII: any str works
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    """Responses keyed by ``(namespace, key)`` in the ``robustlab_cache`` table of a store.

    ``location`` is a store path or SQLAlchemy URL, or an open :class:`Store` (its engine is shared).
    """

    def __init__(self, location: str | Path | Store) -> None:
        self._own = not isinstance(location, Store)
        self.store = Store(location) if not isinstance(location, Store) else location
        self.url = self.store.url
        self.engine = self.store.engine
        try:
            _meta.create_all(self.engine, checkfirst=True)
        except DatabaseError:  # another process created it between the check and the CREATE
            if not sa.inspect(self.engine).has_table(cache_table.name):
                raise
        self.hits = 0
        self.misses = 0

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        """The cached values of those ``keys`` that are present (missing keys are left out)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        t = cache_table
        with self.engine.connect() as c:
            for lo in range(0, len(keys), _CHUNK):
                q = sa.select(t.c.key, t.c.value).where(
                    t.c.namespace == namespace, t.c.key.in_(keys[lo : lo + _CHUNK])
                )
                found.update((k, json.loads(v)) for k, v in c.execute(q))
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        return self.get_many(namespace, [key]).get(key, default)

    def put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        """Store ``key -> value`` (JSON-able) pairs in one transaction; existing keys are kept."""
        if not items:
            return
        _check_ns(namespace)
        now = time.time()
        rows = [
            {"namespace": namespace, "key": k, "value": json.dumps(v), "created": now}
            for k, v in items.items()
        ]
        dialect = self.engine.dialect.name
        with self.engine.begin() as c:
            if dialect in ("sqlite", "postgresql"):
                mod: Any = sqlite if dialect == "sqlite" else postgresql
                ins = mod.insert(cache_table).on_conflict_do_nothing()
                c.execute(ins, rows)
                return
            have = set(self._present(c, namespace, list(items)))  # other databases: skip present
            new = [r for r in rows if r["key"] not in have]
            if new:
                c.execute(cache_table.insert(), new)

    def _present(self, c: sa.Connection, namespace: str, keys: list[str]) -> Iterator[str]:
        t = cache_table
        for lo in range(0, len(keys), _CHUNK):
            q = sa.select(t.c.key).where(
                t.c.namespace == namespace, t.c.key.in_(keys[lo : lo + _CHUNK])
            )
            yield from (r[0] for r in c.execute(q))

    def count(self, namespace: str | None = None) -> int:
        """Number of cached entries (in one namespace, or in all)."""
        q = sa.select(sa.func.count()).select_from(cache_table)
        if namespace is not None:
            q = q.where(cache_table.c.namespace == namespace)
        with self.engine.connect() as c:
            return int(c.execute(q).scalar_one())

    def clear(self, namespace: str | None = None) -> int:
        """Delete cached entries (one namespace, or all); returns how many were deleted."""
        q = cache_table.delete()
        if namespace is not None:
            q = q.where(cache_table.c.namespace == namespace)
        with self.engine.begin() as c:
            return int(c.execute(q).rowcount or 0)

    def close(self) -> None:
        if self._own:
            self.store.close()


def _check_ns(namespace: str) -> None:
    if not isinstance(namespace, str) or not namespace or len(namespace) > 200:
        raise ConfigError(
            f"cache namespace must be a non-empty string of <= 200 chars: {namespace!r}"
        )


# the active store --------------------------------------------------------------------------------
_lock = threading.Lock()
_active: str | None = None
_opened: dict[tuple[int, str], ResponseCache] = {}


def set_active_store(location: str | Path | None) -> str | None:
    """Make ``location`` (a store path or URL; ``None`` to clear) the active store of this process.

    Also exported as ``$ROBUSTLAB_ACTIVE_STORE`` so that worker processes started afterwards (Ray's
    local workers, subprocesses) see it. Returns the previously active location.
    """
    global _active
    with _lock:
        prev, _active = _active, (str(location) if location is not None else None)
        if _active is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = _active
    return prev


def active_store() -> str | None:
    """The active store's location: the one set in this process, else ``$ROBUSTLAB_ACTIVE_STORE``."""
    return _active if _active is not None else (os.environ.get(ENV) or None)


@contextlib.contextmanager
def use_store(location: str | Path | None) -> Iterator[None]:
    """``with use_store(url): ...`` -- the active store for the block, restored afterwards."""
    prev = set_active_store(location)
    try:
        yield
    finally:
        set_active_store(prev)


def open_cache(location: str | Path) -> ResponseCache:
    """A process-wide :class:`ResponseCache` per location (opened once; reopened after a fork)."""
    key = (os.getpid(), str(location))
    with _lock:
        if key not in _opened:
            _opened[key] = ResponseCache(location)
        return _opened[key]


def active_cache() -> ResponseCache | None:
    """The response cache of the active store, or ``None`` when no run is active."""
    loc = active_store()
    return open_cache(loc) if loc else None
