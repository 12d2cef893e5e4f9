"""Background writer: finished units go to the store while the next units compute.

Units finishing within ``window`` seconds of each other are written in one transaction (group
commit): the writer wakes once per window rather than once per unit, so it takes the interpreter
from the model far less often. Each unit is still all-or-nothing, so a killed run loses at most the
units of the last window, which a rerun recomputes.

The writer also keeps the run's lease (:mod:`robustlab.store.lease`): every write renews its
heartbeat, and while no unit finishes it renews it every ``heartbeat`` seconds, so a run killed
at any moment shows as interrupted once the lease lapses (at once on the same host).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

from robustlab.store import Store
from robustlab.store.lease import HEARTBEAT

Item = tuple[str, str, Any, float, str | None]  # key, description, rows, seconds, error


class UnitWriter:
    """Context manager owning a writer thread; ``put`` a finished unit, exit flushes everything."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        max_batch: int = 64,
        window: float = 0.25,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.max_batch = max_batch
        self.window = window
        self.heartbeat = heartbeat
        self._q: queue.Queue[Item | None] = queue.Queue()
        self._error: BaseException | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="robustlab-writer", daemon=True)

    def __enter__(self) -> UnitWriter:
        self._thread.start()
        return self

    def put(self, item: Item) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def _loop(self) -> None:
        stop = False
        while not stop:
            try:
                item = self._q.get(timeout=self.heartbeat)  # the one wake-up per window
            except queue.Empty:  # no unit finished for a while: renew the lease
                self._beat()
                continue
            if item is None:
                break
            batch: list[Item] = [item]
            # sleep through the window instead of waiting on the queue: units put meanwhile do
            # not wake this thread (each wake-up takes the interpreter from the model's thread)
            self._closing.wait(self.window)  # cut short when the run ends
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            if self._error is None:
                try:
                    self.store.write_units(self.run_id, batch)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = e

    def _beat(self) -> None:
        # a missed beat only ages the lease; a store that cannot be written fails the next write
        if self._error is None:
            with contextlib.suppress(Exception):
                self.store.heartbeat(self.run_id)

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._q.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error
