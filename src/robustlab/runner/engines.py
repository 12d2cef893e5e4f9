"""Engines execute work units: ``local`` (in process) and ``ray`` (a local or remote Ray cluster).

An engine's ``map(units, run_id)`` yields ``(unit, rows, error, seconds)`` as units finish, in any
order; the runner writes each finished unit to the store at once.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

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


class Placement(NamedTuple):
    """Where a Ray task ran one unit, and what its worker process had loaded once it finished:
    ``loads`` counts builds per kind ("model", "data", "shard", ...) since the process started
    (:attr:`Context.loads`), so a model loaded once per worker shows ``loads["model"] == 1`` in
    every unit that process ran."""

    unit_key: str
    node_id: str
    node_ip: str
    pid: int
    loads: dict[str, int]


def _run_remote(
    unit: WorkUnit, store_url: str | None, run_id: str | None
) -> tuple[Rows, str | None, float, Placement]:
    """:func:`_run_one` in a Ray worker, with where it ran. Only the unit (a small spec) travels
    with each task; the worker loads model and data from their specs into its process context
    once, and later units in that process reuse them."""
    import ray

    rows, err, secs = _run_one(unit, store_url, run_id)
    rt = ray.get_runtime_context()
    loads = dict(process_context().loads)
    where = Placement(
        unit.key, rt.get_node_id(), ray.util.get_node_ip_address(), os.getpid(), loads
    )
    return rows, err, secs, where


class LocalEngine:
    """Run units one after another in this process (default)."""

    name = "local"

    def start(self) -> None:
        """Nothing to start (the runner starts every engine before it stores a run)."""

    def map(self, units: Sequence[WorkUnit], run_id: str | None = None) -> Iterator[Result]:
        for u in units:
            rows, err, secs = _run_one(u, None, run_id)
            yield u, rows, err, secs


class RayEngine:
    """Run units as Ray tasks; ``address=None`` starts (or joins) a local Ray instance.

    A local instance listens on loopback (127.0.0.1) only, without a dashboard: nothing on the
    network can reach it. To use several machines, start a cluster yourself and pass its
    ``address`` (CLI: ``--ray-address``); a cluster of several nodes on this machine (nodes on
    loopback addresses, docs/scale-ray.md) is joined through the node at that address. Each
    worker process keeps its own cache of loaded models and data, so they are loaded once per
    worker, not once per unit; :attr:`placements` says where each unit of the last ``map`` ran.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.placements: list[Placement] = []

    def start(self) -> None:
        """Connect to ``address``, or start a local instance bound to loopback (if none is up)."""
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray engine needs Ray: pip install 'robustlab[ray]'") from None
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            _connect(ray, self.address, kwargs)
            return
        if self.num_cpus:
            kwargs["num_cpus"] = self.num_cpus
        with _loopback():
            ray.init(_node_ip_address="127.0.0.1", **kwargs)

    def map(self, units: Sequence[WorkUnit], run_id: str | None = None) -> Iterator[Result]:
        import ray

        self.start()
        self.placements = []
        remote = ray.remote(_run_remote)
        url = active_store()  # workers must reach it: PostgreSQL, or SQLite on a shared disk
        pending = {remote.remote(u, url, run_id): u for u in units}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    rows, err, secs, where = ray.get(ref)
                    self.placements.append(where)
                    yield unit, rows, err, secs
        finally:  # interrupted (or the consumer stopped): do not leave work running
            for ref in pending:
                ray.cancel(ref)


def _connect(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
    """Join the cluster at ``address``; refuse at once (not after minutes of Ray's retries) when
    nothing listens there.

    A node on a loopback address (a cluster on this machine) is joined as that node: Ray would
    otherwise replace 127.0.0.1 by the machine's external address, and look for the driver's
    raylet there.
    """
    host, port = _host_port(address)
    if host is None:  # "auto", "ray://...": Ray resolves it
        ray.init(address=address, **kwargs)
        return
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster answers at --ray-address {address} ({e.strerror or e}); start one "
            "(docs/scale-ray.md) or leave --ray-address out for a local instance"
        ) from None
    if host == "localhost" or _is_loopback(host):
        ip = "127.0.0.1" if host == "localhost" else host
        with _loopback():
            ray.init(address=f"{ip}:{port}", _node_ip_address=ip, **kwargs)
        return
    ray.init(address=address, **kwargs)


def _host_port(address: str) -> tuple[str | None, int]:
    """``(host, port)`` of a ``host:port`` address; ``(None, 0)`` for any other form."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit() or not host:
        return None, 0
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_NO_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback() -> Iterator[None]:
    """Make a local Ray instance keep to 127.0.0.1.

    Ray replaces a loopback ``_node_ip_address`` by the machine's external address, and its GCS,
    raylet and workers then listen on every interface, unless its single-machine mode is on (the
    default on macOS and Windows: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). That mode is read
    from the environment when Ray is imported, by Ray here and by every process it starts; if
    Ray was imported before, its constant is switched for the ``ray.init`` call. The test checks
    the sockets the started processes listen on.
    """
    from ray._private import ray_constants

    env = os.environ.get(_NO_CLUSTER)
    os.environ[_NO_CLUSTER] = "0"  # inherited by the GCS, raylet and workers
    old = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old
        if env is None:
            os.environ.pop(_NO_CLUSTER, None)
        else:
            os.environ[_NO_CLUSTER] = env


def make_engine(
    name: str, address: str | None = None, num_cpus: int | None = None
) -> LocalEngine | RayEngine:
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return RayEngine(address, num_cpus)
    raise ConfigError(f"unknown engine {name!r}; use 'local' or 'ray'")
