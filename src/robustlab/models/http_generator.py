"""Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, hosted APIs) as a :class:`Generator`.

``http-generator`` sends each prompt to ``{base_url}/chat/completions`` (``chat=True``: the prompt
is one user message, after an optional ``system`` message) or ``{base_url}/completions`` (raw
continuation), at most ``concurrency`` requests at a time, and retries connection errors, timeouts,
429s (honouring ``Retry-After``) and 5xx with exponential backoff and jitter (:mod:`~robustlab.models.http_client`).
Greedy decoding (``temperature=0``) is the default; with ``temperature > 0`` repeated prompts in
one call are distinct samples (request ``seed`` = hash(seed, sample number)), as for the local
GGUF generator.

Responses are cached (``cache="store"``: the active run's database, see
:mod:`robustlab.store.cache`, else ``cache_dir()/responses.db``; ``"disk"``: always that file;
``"off"``) under a key of base_url, model, chat/system, prompt and every generation parameter, so a
rerun costs no calls. Each answer is cached as it arrives (one small transaction per answer, in
the caller's thread), so a run killed mid-batch pays again only for the prompts that had not been
answered. A prompt that still fails after its retries raises
:class:`~robustlab.core.errors.ModelOutputError` *after* the successes of its batch are cached, and
the failure is remembered for ``FAILURE_TTL`` seconds (:mod:`~robustlab.models.http_pool`): when
the task bisects the batch to isolate the failing prompt, no request is repeated. An unreachable
endpoint fails fast for that long too.

Token accounting: ``last_usage`` (one dict per prompt of the last call: ``prompt_tokens``,
``completion_tokens``, ``cost``, ``cached``, ``error``) and ``usage`` totals over the object's life
(``requests`` = HTTP attempts, ``completions`` fetched, ``cache_hits``, ``failures``, tokens and
``cost`` from the optional per-1k-token prices). The API key is read from the environment variable
named by ``api_key_env`` and never enters records, fingerprints or cache keys.

Example::

    gen = models.create("http-generator", {"base_url": "http://127.0.0.1:8080/v1",
                                           "model": "smollm2", "max_tokens": 32})
    gen.generate(["The capital of France is"])   # -> [" Paris. ..."]
    gen.usage["completion_tokens"]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.paths import cache_dir
from robustlab.core.registry import models
from robustlab.core.rng import seed_from
from robustlab.core.types import (
    Capabilities,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Seed,
)
from robustlab.models.http_client import JSONClient
from robustlab.models.http_pool import RequestPool
from robustlab.models.http_usage import UsageMeter
from robustlab.store.cache import ResponseCache, active_cache, cache_key, open_cache


@models.register("http-generator")
class HTTPGenerator:
    """Generator behind an OpenAI-compatible HTTP API: concurrent, retried, cached, accounted."""

    FAILURE_TTL = 60.0  # seconds a failed prompt / unreachable endpoint is not re-requested

    def __init__(
        self,
        base_url: str,
        model: str,
        chat: bool = True,
        system: str | None = None,
        api_key_env: str | None = None,
        max_tokens: PositiveInt = 256,
        temperature: NonNegative = 0.0,
        stop: list[str] | None = None,
        seed: Seed = 0,
        extra: dict[str, Any] | None = None,
        concurrency: PositiveInt = 4,
        timeout: Positive = 60.0,
        retries: NonNegativeInt = 3,
        backoff: NonNegative = 0.5,
        max_backoff: NonNegative = 30.0,
        cache: str = "store",
        price_prompt_per_1k: float | None = None,
        price_completion_per_1k: float | None = None,
        version: str | None = None,
    ) -> None:
        parts = urlsplit(str(base_url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"http-generator base_url must be http(s)://host..., got {base_url!r}"
            )
        self.base_url = str(base_url).rstrip("/") + ("" if parts.path.strip("/") else "/v1")
        if not isinstance(model, str) or not model:
            raise ConfigError("http-generator needs a model name (the API's 'model' field)")
        if cache not in ("store", "disk", "off"):
            raise ConfigError(f"http-generator cache must be store, disk or off, got {cache!r}")
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise ConfigError("http-generator needs concurrency >= 1, retries >= 0, timeout > 0")
        self.model, self.chat, self.system, self.api_key_env = model, chat, system, api_key_env
        self.defaults = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        self.seed, self.extra, self.cache = seed, dict(extra or {}), cache
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.backoff, self.max_backoff, self.version = backoff, max_backoff, version
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(f"http-generator: environment variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = JSONClient(self.base_url, headers, timeout, retries, backoff, max_backoff)
        self._pool = RequestPool(self._client, concurrency, self.FAILURE_TTL)
        self._meter = UsageMeter(price_prompt_per_1k, price_completion_per_1k)

    @property
    def usage(self) -> dict[str, Any]:
        """Totals over this object's life (see :mod:`robustlab.models.http_usage`)."""
        return self._meter.totals

    @property
    def last_usage(self) -> list[dict[str, Any]]:
        """One dict per prompt of the last ``generate`` call (tokens, cost, cached, error)."""
        return self._meter.last

    def fingerprint(self) -> str:
        ident = [self.base_url, self.model, self.chat, self.system, self.version]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]

    def _cache(self) -> ResponseCache | None:
        if self.cache == "off":
            return None
        active = active_cache() if self.cache == "store" else None
        return active or open_cache(cache_dir() / "responses.db")

    def _body(self, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, **self.extra}
        if self.chat:
            sys_msg = [{"role": "system", "content": self.system}] if self.system else []
            body["messages"] = [*sys_msg, {"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        body.update({k: v for k, v in params.items() if k != "stop" or v})
        return body

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        """One completion per prompt; raises ``ModelOutputError`` if any prompt failed (after
        caching the others)."""
        bad = set(kwargs) - {"max_tokens", "temperature", "stop", "seed"}
        if bad:
            raise ConfigError(f"http-generator.generate got unknown options {sorted(bad)}")
        opts = {**self.defaults, **{k: v for k, v in kwargs.items() if k != "seed"}}
        seed = kwargs.get("seed", self.seed)
        if opts["max_tokens"] < 1 or opts["temperature"] < 0:
            raise ConfigError(f"need max_tokens >= 1 and temperature >= 0 ({opts})")
        opts["stop"] = list(opts["stop"] or [])
        keys, bodies, seen, invalid = [], {}, {}, {}
        for p in prompts:
            if not isinstance(p, str):
                raise ConfigError(f"prompts must be strings, got {type(p).__name__}")
            try:
                p.encode("utf-8")
            except UnicodeEncodeError as e:  # lone surrogates (undecodable bytes): not sendable
                keys.append(k := cache_key(p))
                invalid[k] = f"prompt is not valid Unicode text ({e.reason} at {e.start})"
                continue
            j = seen[p] = seen.get(p, -1) + 1
            params = {**opts, "seed": seed_from(seed, j if opts["temperature"] > 0 else 0)}
            ident = [self.base_url, self.model, self.chat, self.system, self.extra, p, params]
            keys.append(k := cache_key(*ident))
            bodies.setdefault(k, self._body(p, params))
        cache, ns = self._cache(), f"http:{self.fingerprint()}"
        got: dict[str, Any] = cache.get_many(ns, list(bodies)) if cache else {}
        path = "/chat/completions" if self.chat else "/completions"
        todo = {k: b for k, b in bodies.items() if k not in got}
        # each answer is stored as it arrives (a killed run loses none it was given), and so
        # before any error is raised: a bisecting caller re-requests nothing
        save = (lambda k, v: cache.put_many(ns, {k: v})) if cache else None
        fresh, errors = self._pool.fetch(todo, path, self._parse, save)
        errors.update(invalid)
        self._meter.record(keys, got, fresh, errors, self._client.requests)
        if errors:
            first = errors[next(k for k in keys if k in errors)]
            n = sum(k in errors for k in keys)
            raise ModelOutputError(
                first if len(keys) == 1 else f"{n} of {len(keys)} failed: {first}"
            )
        return [(got.get(k) or fresh[k])["text"] for k in keys]

    def _parse(self, r: dict[str, Any]) -> dict[str, Any]:
        c = r["choices"][0]
        text = c["message"]["content"] if self.chat else c["text"]
        if not isinstance(text, str):
            raise TypeError(f"completion text is {type(text).__name__}, not a string")
        u = r.get("usage") or {}
        usage = {k: int(u.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}
        return {"text": text, "usage": usage, "finish_reason": c.get("finish_reason")}

    def ping(self) -> None:
        """Raise :class:`ModelOutputError` at once if the endpoint cannot be reached (a preflight
        check before a run; any HTTP answer, even an error status, counts as reachable)."""
        why = self._client.reachable()
        if why is not None:
            raise ModelOutputError(f"{self.base_url} unreachable ({why}); is the server up?")

    def close(self) -> None:
        self._pool.close()
        self._client.close()
