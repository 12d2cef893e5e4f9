"""Concurrent requests with a memory of failures (for :mod:`robustlab.models.http_generator`).

``RequestPool(client, concurrency).fetch(todo, path, parse)`` posts every ``key -> body`` of
``todo`` through a :class:`~robustlab.models.http_client.JSONClient` (itself retrying), at most
``concurrency`` at a time, and returns ``(results, errors)`` by key: one failing request never
stops the others. ``on_result(key, value)``, if given, is called (in the caller's thread) as each
answer arrives, so the caller can persist it before the rest of the batch is done. A key whose request failed after its retries is remembered for ``ttl`` seconds
and answered with the same error without a request; after an
:class:`~robustlab.models.http_client.Unreachable` error every request fails fast for ``ttl``
seconds (until a request succeeds). So a caller that bisects a failing batch, or a run whose
server is down, costs one round of retries, not one per bisection step or per batch.

Example::

    pool = RequestPool(JSONClient("http://127.0.0.1:8080/v1"), concurrency=4)
    results, errors = pool.fetch({"k1": {"model": "m", "prompt": "Hi"}}, "/completions", parse)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from robustlab.models.http_client import JSONClient, Unreachable


class RequestPool:
    """A lazily started thread pool over one client, with failure memory."""

    def __init__(self, client: JSONClient, concurrency: int, ttl: float = 60.0) -> None:
        self.client, self.concurrency, self.ttl = client, concurrency, ttl
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._failed: dict[str, tuple[float, str]] = {}
        self._down: tuple[float, str] | None = None

    def fetch(
        self,
        todo: dict[str, dict[str, Any]],
        path: str,
        parse: Callable[[Any], Any],
        on_result: Callable[[str, Any], None] | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        now = time.monotonic()
        if len(self._failed) > 10_000:  # forget expired failures
            self._failed = {k: v for k, v in self._failed.items() if now - v[0] < self.ttl}
        errors: dict[str, str] = {}
        for k in todo:
            if k in self._failed and now - self._failed[k][0] < self.ttl:
                errors[k] = self._failed[k][1]
            elif self._down and now - self._down[0] < self.ttl:
                errors[k] = self._down[1]
        fresh: dict[str, Any] = {}
        todo = {k: b for k, b in todo.items() if k not in errors}
        if not todo:
            return fresh, errors
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="http-gen")
            futs = {self._pool.submit(self.client.post, path, b, parse): k for k, b in todo.items()}
        for f in as_completed(futs):  # in the order answers arrive
            k = futs[f]
            try:
                fresh[k] = f.result()
            except Exception as e:  # noqa: BLE001 - surfaces per key, remembered
                errors[k] = str(e)
                self._failed[k] = (time.monotonic(), str(e))
                if isinstance(e, Unreachable):
                    self._down = (time.monotonic(), str(e))
                continue
            if on_result is not None:
                on_result(k, fresh[k])
        if fresh:
            self._down = None
        return fresh, errors

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:  # picklable: the threads are restarted on demand
        return {k: v for k, v in self.__dict__.items() if k not in ("_pool", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pool, self._lock = None, threading.Lock()
