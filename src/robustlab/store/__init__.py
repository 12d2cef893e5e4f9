"""The results store (SQLite by default, any SQLAlchemy URL)."""

from robustlab.store.store import Store

__all__ = ["Store"]
