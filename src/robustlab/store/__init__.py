"""The results store (SQLite by default, any SQLAlchemy URL).

``Store`` is imported on first use (it brings SQLAlchemy and pandas), so that
:mod:`robustlab.store.readonly` and :mod:`robustlab.store.lease` load without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robustlab.store.store import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from robustlab.store.store import Store

        return Store
    raise AttributeError(f"module 'robustlab.store' has no attribute {name!r}")
