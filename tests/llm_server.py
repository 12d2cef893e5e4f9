"""Test fixture: a real OpenAI-compatible HTTP server on loopback serving SmolLM2-135M, with faults.

The model is served by llama.cpp's own HTTP server (``xllamacpp.Server`` listens on
``127.0.0.1:<free port>`` and speaks the OpenAI wire format: ``/v1/completions``,
``/v1/chat/completions``). In front of it runs a thin proxy (``http.server``) that counts every
request, sums the ``usage`` of the answers it forwards, and injects faults on demand:

``500`` / ``503`` (HTTP error), ``429`` (with ``Retry-After``), ``400`` (not retryable),
``hang`` (accept, never answer), ``drop`` (close without an answer), ``malformed`` (200 with broken
JSON), ``missing`` (200, valid JSON without ``choices``). Each :class:`Fault` fires ``times`` times
on requests whose body contains ``match`` (every request when ``match`` is None).
:func:`refused_url` gives a loopback URL where nothing listens (connection refused).

Example::

    with LLMServer() as srv:
        srv.faults.append(Fault("500", times=2))
        url = srv.url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from robustlab.models.llm_gguf import _smollm2_path


@dataclass
class Fault:
    mode: str  # 500 | 503 | 429 | 400 | hang | drop | malformed | missing
    times: int = 1
    match: str | None = None
    retry_after: float = 0.2  # for 429
    hang_s: float = 5.0  # for hang: longer than the client's timeout


def refused_url() -> str:
    """A loopback base URL on a port where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


class LLMServer:
    """llama.cpp's HTTP server (SmolLM2-135M-Instruct) behind a counting, fault-injecting proxy."""

    def __init__(self, n_threads: int = 1, n_parallel: int = 2) -> None:
        import xllamacpp as xl

        p = xl.CommonParams()
        p.model.path = _smollm2_path()
        p.n_ctx = 2048 * n_parallel  # split across slots: 2048 tokens each
        p.n_parallel = n_parallel
        p.cpuparams.n_threads = n_threads
        p.cpuparams_batch.n_threads = n_threads
        p.verbosity = -1
        self._llama = xl.Server(p)  # listens on 127.0.0.1:<free port>
        self.upstream = str(self._llama.listening_address)
        self.faults: list[Fault] = []
        self.requests = 0  # every request the proxy received
        self.forwarded = 0  # requests answered by the model
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []  # Authorization header of each request
        self.inflight = self.max_inflight = 0  # concurrent requests being answered by the model
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests = self.forwarded = 0
            self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
            self.bodies.clear()
            self.auth.clear()
            self.max_inflight = 0

    def _fault(self, raw: bytes, auth: str | None) -> Fault | None:
        text = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests += 1
            self.auth.append(auth)
            for f in self.faults:
                if f.times > 0 and (f.match is None or f.match in text):
                    f.times -= 1
                    return f
        return None

    def forward(self, path: str, raw: bytes) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.upstream + path, data=raw, headers={"Content-Type": "application/json"}
        )
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        finally:
            with self._lock:
                self.inflight -= 1
        if status == 200:
            u = json.loads(body).get("usage", {})
            with self._lock:
                self.forwarded += 1
                self.bodies.append(json.loads(raw))
                for k in self.usage:
                    self.usage[k] += int(u.get(k, 0))
        return status, body

    def close(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> LLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(srv: LLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real servers

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            f = srv._fault(raw, self.headers.get("Authorization"))
            err = json.dumps({"error": {"message": f"injected {f.mode if f else ''}"}}).encode()
            if f is None:
                self._send(*srv.forward(self.path, raw))
            elif f.mode in ("500", "503", "400"):
                self._send(int(f.mode), err)
            elif f.mode == "429":
                self._send(429, err, {"Retry-After": str(f.retry_after)})
            elif f.mode == "malformed":
                self._send(200, b'{"choices": [{"text": "Par')
            elif f.mode == "missing":
                self._send(200, b'{"object": "text_completion", "usage": {}}')
            elif f.mode == "hang":
                srv._stop.wait(f.hang_s)
                self.close_connection = True
            elif f.mode == "drop":
                self.close_connection = True
            else:
                raise ValueError(f"unknown fault mode {f.mode!r}")

    return Handler
