"""Who may reach the dashboard, and which store it may open (without writing to it)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from robustlab.core.errors import ConfigError, StoreError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback ``host`` without a ``token`` (anyone on the network could
    read every run). Example: ``check_bind("0.0.0.0", None)`` raises :class:`ConfigError`."""
    if token is not None and not token.strip():
        raise ConfigError("--token must not be empty")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve on {host!r} without --token: the dashboard shows every run in the "
            "store; bind to 127.0.0.1 (the default) or pass --token SECRET"
        )


def open_store(location: str) -> Any:
    """The :class:`~robustlab.store.Store` at ``location``, opened only if it already is a store
    of this robustlab's schema: a missing file, a foreign database, or an older or newer schema is
    a :class:`StoreError` and nothing is created or migrated (the dashboard never writes)."""
    import sqlalchemy as sa

    from robustlab.store import Store
    from robustlab.store import location as location_
    from robustlab.store.schema import SCHEMA_VERSION, meta

    if location_.is_url(location):
        url = location
        try:
            parsed = sa.engine.make_url(url)
        except Exception as e:  # noqa: BLE001 - a malformed URL, said in one line
            raise StoreError(f"cannot open store {location_.masked(url)}: {e}") from None
        path = parsed.database if parsed.get_backend_name() == "sqlite" else None
        if parsed.get_backend_name() == "sqlite" and (not path or path == ":memory:"):
            raise StoreError(f"store {location_.masked(url)} is in memory: nothing to serve")
    else:
        path = str(Path(location).expanduser())
        url = f"sqlite:///{Path(path).absolute()}"
    shown = location_.masked(url)
    if path is not None and not Path(path).is_file():
        raise StoreError(f"no store at {path}: run a suite first (`robustlab run ...`)")
    try:
        engine = sa.create_engine(url)
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"cannot open store {shown}: {location_.one_line(e, url)}") from None
    try:
        with engine.connect() as c:
            names = sa.inspect(c).get_table_names()
            if meta.name not in names:
                raise StoreError(f"{shown} is not a robustlab store (no {meta.name} table)")
            row = c.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    except sa.exc.SQLAlchemyError as e:
        raise StoreError(f"cannot open store {shown}: {location_.one_line(e, url)}") from None
    finally:
        engine.dispose()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {shown} has schema version {version}, newer than this robustlab's "
            f"{SCHEMA_VERSION}: upgrade robustlab to serve it (the store was left untouched)"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"store {shown} has the older schema version {version}; the dashboard does not "
            "migrate stores: run `robustlab runs --store ...` once to upgrade it"
        )
    return Store(location)
