"""A small JSON-over-HTTP client with retries: exponential backoff + jitter, ``Retry-After``.

Standard library only (``http.client``): one keep-alive connection per worker thread. Retried:
connection errors (refused, reset, dropped), timeouts, HTTP 408/409/429 and 5xx, and 200 answers
whose body is not the JSON that ``parse`` accepts (malformed JSON, missing fields). Other 4xx
answers (bad request, context too long, unauthorized) are not retried. After the last attempt a
:class:`~robustlab.core.errors.ModelOutputError` names the endpoint, the attempts and the cause.

The wait before retry ``a`` (0-based) is ``Retry-After`` when the server sends one (seconds or an
HTTP date, capped at ``max_backoff``), else ``min(max_backoff, backoff * 2**a)`` scaled by a random
factor in [0.5, 1) ("equal jitter", so that clients retrying together spread out). The jitter comes
from a private generator: it changes timing only, never results.

``timeout`` bounds connecting and each socket read (a server that hangs after accepting the
connection is a timeout), not the total time of a slowly streamed answer.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from robustlab.core.errors import ModelOutputError

RETRY_STATUS = frozenset({408, 409, 425, 429})
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Unreachable(ModelOutputError):
    """The endpoint could not be reached at all (connection refused / host unknown)."""


class _Retry(Exception):
    def __init__(self, msg: str, wait: float | None = None, refused: bool = False) -> None:
        super().__init__(msg)
        self.wait = wait
        self.refused = refused


class JSONClient:
    """POST JSON to ``base_url + path`` with retries; counts every HTTP attempt in ``requests``."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelOutputError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.requests = 0  # HTTP attempts made (all threads)
        self._count = threading.Lock()
        self._local = threading.local()
        self._jitter = random.Random()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _send(self, path: str, data: bytes) -> http.client.HTTPResponse:
        with self._count:
            self.requests += 1
        conn = self._conn()
        conn.request("POST", path, body=data, headers=self.headers)
        return conn.getresponse()

    def post(self, path: str, body: dict[str, Any], parse: Callable[[Any], Any]) -> Any:
        """POST ``body`` and return ``parse(json)``; ``parse`` raises ``ValueError``/``KeyError``/
        ``TypeError``/``IndexError`` on a payload it cannot use (then the request is retried)."""
        url = self.base_url + path
        data = json.dumps(body).encode()
        last = ""
        refused = True
        for attempt in range(self.retries + 1):
            try:
                return self._once(self._prefix + path, data, parse)
            except _Retry as e:
                last, refused = str(e), refused and e.refused
                if attempt == self.retries:
                    break
                wait = e.wait
                if wait is None:
                    wait = min(self.max_backoff, self.backoff * 2**attempt)
                    wait *= 0.5 + 0.5 * self._jitter.random()
                time.sleep(min(wait, self.max_backoff))
        n = self.retries + 1
        if refused:
            raise Unreachable(f"{url} unreachable after {n} attempts ({last}); is the server up?")
        raise ModelOutputError(f"{url} failed after {n} attempts: {last}")

    def _once(self, path: str, data: bytes, parse: Callable[[Any], Any]) -> Any:
        reused = getattr(self._local, "conn", None) is not None
        try:
            try:
                resp = self._send(path, data)
            except _STALE:  # a kept-alive connection the server had closed: reconnect once
                if not reused:
                    raise
                self._drop()
                resp = self._send(path, data)
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            is_refused = isinstance(e, ConnectionRefusedError) or "Name or service" in str(e)
            kind = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            raise _Retry(f"{kind}: {e}" if str(e) else kind, refused=is_refused) from None
        if resp.getheader("Connection", "").lower() == "close":
            self._drop()
        status = resp.status
        if status != 200:
            msg = f"HTTP {status}: {raw[:200].decode('utf-8', 'replace').strip()}"
            if status in RETRY_STATUS or status >= 500:
                raise _Retry(msg, _retry_after(resp.getheader("Retry-After")))
            raise ModelOutputError(f"{self.base_url}{path[len(self._prefix) :]} answered {msg}")
        try:
            return parse(json.loads(raw))
        except json.JSONDecodeError:
            raise _Retry(f"malformed JSON: {raw[:80]!r}") from None
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise _Retry(f"unexpected response ({type(e).__name__}: {e}): {raw[:120]!r}") from None

    def reachable(self, path: str = "/models") -> str | None:
        """``None`` if the server answers a GET of ``path`` at all (any status), else why not."""
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        try:
            conn.request("GET", self._prefix + path, headers=self.headers)
            conn.getresponse().read()
            return None
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def close(self) -> None:
        self._drop()

    def __getstate__(self) -> dict[str, Any]:  # picklable (e.g. shipped to a worker)
        return {k: v for k, v in self.__dict__.items() if k not in ("_local", "_count")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local, self._count = threading.local(), threading.Lock()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
