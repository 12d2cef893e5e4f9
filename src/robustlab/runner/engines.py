"""Engines execute work units: ``local`` (in process) and ``ray`` (a local or remote Ray cluster).

An engine's ``map(units, run_id)`` yields ``(unit, rows, error, seconds)`` as units finish, in any
order; the runner writes each finished unit to the store at once.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.runner.context import process_context
from robustlab.runner.execute import Rows, execute_unit
from robustlab.runner.plan import WorkUnit
from robustlab.store.cache import active_store, set_active_store

Result = tuple[WorkUnit, Rows, str | None, float]


def _run_one(
    unit: WorkUnit, store_url: str | None = None, run_id: str | None = None
) -> tuple[Rows, str | None, float]:
    """Execute one unit of run ``run_id``; ``store_url`` makes that store active in a worker
    process (Ray workers do not see an active store set after they started)."""
    if store_url:
        set_active_store(store_url)
    process_context().start_run(run_id)
    t0 = time.perf_counter()
    try:
        rows = execute_unit(unit)
        return rows, None, time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - a failing unit is recorded; the run goes on
        tb = traceback.extract_tb(e.__traceback__)[-1]
        where = f" ({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})"
        return {}, f"{type(e).__name__}: {e}{where}", time.perf_counter() - t0


class LocalEngine:
    """Run units one after another in this process (default)."""

    name = "local"

    def map(self, units: Sequence[WorkUnit], run_id: str | None = None) -> Iterator[Result]:
        for u in units:
            rows, err, secs = _run_one(u, None, run_id)
            yield u, rows, err, secs


class RayEngine:
    """Run units as Ray tasks; ``address=None`` starts (or joins) a local Ray instance.

    Each worker process keeps its own cache of loaded models, so a model is loaded once per worker.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus

    def map(self, units: Sequence[WorkUnit], run_id: str | None = None) -> Iterator[Result]:
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray engine needs Ray: pip install 'robustlab[ray]'") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(**kwargs)
        remote = ray.remote(_run_one)
        url = active_store()  # workers must reach it: PostgreSQL, or SQLite on a shared disk
        pending = {remote.remote(u, url, run_id): u for u in units}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    rows, err, secs = ray.get(ref)
                    yield unit, rows, err, secs
        finally:  # interrupted (or the consumer stopped): do not leave work running
            for ref in pending:
                ray.cancel(ref)


def make_engine(
    name: str, address: str | None = None, num_cpus: int | None = None
) -> LocalEngine | RayEngine:
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(address, num_cpus)
    raise ConfigError(f"unknown engine {name!r}; use 'local' or 'ray'")
