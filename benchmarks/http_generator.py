"""http-generator against llama.cpp's HTTP server on loopback (SmolLM2-135M), measured side by side.

Prints, for the same prompts and greedy decoding, in one process:

1. HTTP adapter (concurrency 1) / in-process GGUF generator: the cost of the HTTP path, and the
   in-process generator with ``n_parallel`` slots (same outputs asserted);
2. concurrency 1 / concurrency ``--parallel`` (the server has that many slots): the gain of
   concurrent requests;
3. a rerun of a generation suite through the runner with the response cache in its store:
   new HTTP requests (expected 0) and wall time of the rerun / the first run.

    .venv/bin/python benchmarks/http_generator.py [--prompts 8] [--tokens 24] [--parallel 2]

Wall-clock times (the server runs in this process's threads), best of ``--reps``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llm_server import LLMServer  # noqa: E402
from robustlab.core.registry import models  # noqa: E402
from robustlab.data.base import Dataset  # noqa: E402
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite  # noqa: E402
from robustlab.store import Store  # noqa: E402
from robustlab.store.cache import use_store  # noqa: E402

TOPICS = ["rivers", "mountains", "the moon", "bread", "music", "chess", "trains", "winter",
          "coffee", "bees", "glass", "clocks", "maps", "salt", "rain", "paper"]  # fmt: skip


def best(fn: object, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    prompts = [f"A short fact about {t}:" for t in (TOPICS * 4)[: a.prompts]]
    with LLMServer(n_parallel=a.parallel) as srv:
        base = {"base_url": srv.url, "model": "smollm2", "chat": False, "max_tokens": a.tokens}
        h1 = models.create("http-generator", {**base, "concurrency": 1, "cache": "off"})
        hp = models.create("http-generator", {**base, "concurrency": a.parallel, "cache": "off"})
        local = models.create("smollm2-135m", {"cache": False})
        local.generate(prompts[:1], max_tokens=2)  # load the model outside the timings
        assert h1.generate(prompts) == local.generate(prompts, max_tokens=a.tokens)
        t_local = best(lambda: local.generate(prompts, max_tokens=a.tokens), a.reps)
        localp = models.create("smollm2-135m", {"cache": False, "n_parallel": a.parallel})
        assert localp.generate(prompts, max_tokens=a.tokens) == h1.generate(prompts)
        t_localp = best(lambda: localp.generate(prompts, max_tokens=a.tokens), a.reps)
        t_h1 = best(lambda: h1.generate(prompts), a.reps)
        t_hp = best(lambda: hp.generate(prompts), a.reps)
        print(f"{len(prompts)} prompts x {a.tokens} tokens, SmolLM2-135M Q4_1, 1 thread/server")
        print(f"in-process GGUF        {t_local:7.2f} s")
        print(
            f"in-process, {a.parallel} slots   {t_localp:7.2f} s   speed-up {t_local / t_localp:5.2f}x"
        )
        print(f"HTTP, concurrency 1    {t_h1:7.2f} s   ratio to in-process {t_h1 / t_local:5.2f}")
        print(
            f"HTTP, concurrency {a.parallel}    {t_hp:7.2f} s   speed-up over 1: {t_h1 / t_hp:5.2f}x"
        )
        print(f"tokens (totals of concurrency-{a.parallel} adapter): {hp.usage}")

        from robustlab.core.registry import datasets

        datasets.register("_bench-facts")(lambda: Dataset(prompts, ["fact"] * len(prompts)))
        suite = Suite(
            name="bench-http",
            models=[ModelSpec(name="http-generator", params={**base, "concurrency": a.parallel})],
            data=ComponentSpec(name="_bench-facts"),
            task=ComponentSpec(name="generation", params={"match": "contains"}),
            probes=[ProbeSpec(kind="perturbation", name="typo", levels=[0.2])],
        )
        with tempfile.TemporaryDirectory() as d:
            store = Store(Path(d) / "runs.db")
            with use_store(store.url):
                srv.reset()
                t0 = time.perf_counter()
                run_suite(suite, store, progress=False)
                t_first, calls = time.perf_counter() - t0, srv.requests
                t0 = time.perf_counter()
                run_suite(suite, store, resume=False, progress=False)
                t_rerun = time.perf_counter() - t0
            store.close()
        print(
            f"suite run: {calls} HTTP requests in {t_first:.2f} s; rerun: "
            f"{srv.requests - calls} new requests in {t_rerun:.2f} s "
            f"(rerun / first = {t_rerun / t_first:.3f})"
        )


if __name__ == "__main__":
    main()
