"""CLI start-up (issue 22): ``--help``, ``list``, ``runs`` and ``show`` import nothing heavy, and
the light paths print exactly what the full ones print.

- each command runs in a fresh interpreter; the modules it leaves in ``sys.modules`` are checked
  (``show`` needs numpy, pandas and SQLAlchemy for its summary, never torch or scikit-learn);
- ``list`` from the cached catalog prints byte for byte what the old code printed from the fully
  discovered registries (rendered in another fresh interpreter), so the catalog cannot drift;
- ``runs`` on a store file (read with sqlite3) prints what it prints through SQLAlchemy (the same
  store given as a ``sqlite:///`` URL), for complete, failed, running and interrupted runs;
- ``show`` reads the run as the store does (same info, same errors) and prints the summary table
  kept for the run's exact units without reading the records; a changed unit summarises again.

Timings are in ``benchmarks/cli_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from robustlab.core import catalog
from robustlab.core.registry import REGISTRIES
from robustlab.store import Store, readonly, schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALWAYS_HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "transformers", "torchvision")
DATA_STACK = ("numpy", "pandas", "sqlalchemy", "pyarrow")  # only `show` needs these

# the CLI in a fresh interpreter, writing the names of the modules it imported to $RL_MODULES
WRAPPER = """
import json, os, sys
sys.argv = ["robustlab", *json.loads(os.environ["RL_ARGS"])]
code = 0
try:
    from robustlab.cli import main
    main()
except SystemExit as e:
    code = e.code or 0
finally:
    with open(os.environ["RL_MODULES"], "w") as f:
        json.dump(sorted(sys.modules), f)
sys.exit(code)
"""

# what `robustlab list` printed before the catalog, from every registry fully discovered: the
# output of `list` and of `list KIND` for each kind, as JSON
OLD_LIST = """
import io, json
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from robustlab.core.registry import REGISTRIES, describe
def show(kinds):
    out = Console(file=io.StringIO())
    for k in kinds:
        table = Table(title=k, show_header=False, title_justify="left")
        for name, obj in REGISTRIES[k].items():
            table.add_row(f"[bold]{name}[/]", escape(getattr(obj, "doc", "") or describe(obj)))
        out.print(table)
    return out.file.getvalue()
print(json.dumps({"": show(list(REGISTRIES)), **{k: show([k]) for k in REGISTRIES}}))
"""


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TERM")}
    return {**env, "COLUMNS": "200", "ROBUSTLAB_CACHE": str(cache)}


def cli(args: list[str], cache: Path, cwd: Path) -> tuple[int, str, str, set[str]]:
    """``robustlab ARGS`` in a fresh interpreter: (exit code, stdout, stderr, imported modules)."""
    mods = cwd / "modules.json"
    env = {**_env(cache), "RL_ARGS": json.dumps(args), "RL_MODULES": str(mods)}
    r = subprocess.run(
        [sys.executable, "-c", WRAPPER], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    return r.returncode, r.stdout, r.stderr, {m.split(".")[0] for m in json.loads(mods.read_text())}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog cache filled by one cold ``robustlab list`` (full discovery)."""
    d = tmp_path_factory.mktemp("cache")
    code, out, err, mods = cli(["list"], d, d)
    assert code == 0, err
    assert "torch" in mods and catalog.cache_file().name in os.listdir(d)  # discovered, cached
    return d


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_suite: Any) -> Path:
    """A store with a real run on digits (clean, noise, FGSM; the oldest run) plus a failed, a
    running (owned by this process) and an interrupted run (its owner exited)."""
    from robustlab.runner import run_suite

    path = tmp_path_factory.mktemp("store") / "store.db"
    st = Store(path)
    run_suite(small_suite(noise_levels=(1,), pgd_eps=()), st, progress=False)
    time.sleep(0.01)  # distinct creation times: a defined order
    args = ("t", "h" * 64, "{}", 0, 3, {}, {})
    st.finish_run(st.create_run(*args), "failed", "boom | it broke")
    st.create_run(*args)  # running, by this (live) process
    st.close()
    code = (
        f"import sys; from robustlab.store import Store; Store(sys.argv[1]).create_run(*{args!r})"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300)
    return path


def test_catalog_equals_the_fully_discovered_registries(cache: Path, tmp_path: Path) -> None:
    old = subprocess.run(
        [sys.executable, "-c", OLD_LIST], env=_env(tmp_path), capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    expected = json.loads(old.stdout)
    for kind in ("", "attacks", "metrics", "perturbations"):
        for _ in range(3):  # a source file edited meanwhile (a shared tree) means one discovery
            code, out, err, mods = cli(["list", kind] if kind else ["list"], cache, tmp_path)
            assert code == 0, err
            assert out == expected[kind]
            if "torch" not in mods:
                break
        heavy = mods & {*ALWAYS_HEAVY, *DATA_STACK}
        assert not heavy, sorted(heavy)
    for kind in REGISTRIES:
        assert f"\n{kind}" in "\n" + expected[""]  # every kind has its table


@pytest.mark.parametrize(
    "args",
    [["--help"], ["list", "--help"], ["runs"], ["show", "{complete}"], ["runs", "--help"]],
    ids=["help", "list-help", "runs", "show", "runs-help"],
)
def test_light_commands_import_nothing_heavy(
    args: list[str], cache: Path, store: Path, tmp_path: Path
) -> None:
    complete = readonly.run_rows(str(store))[1][-1]["id"]  # type: ignore[index]
    args = [a.replace("{complete}", complete) for a in args]
    args += ["--store", str(store)] if args[-1] != "--help" else []
    code, out, err, mods = cli(args, cache, tmp_path)
    assert code == 0, err
    assert out.strip()
    assert not mods & set(ALWAYS_HEAVY), sorted(mods & set(ALWAYS_HEAVY))
    if args[0] != "show":
        assert not mods & set(DATA_STACK), sorted(mods & set(DATA_STACK))
    else:
        assert "accuracy" in out and "gaussian_noise" in out  # the summary table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "atacks"], "did you mean 'attacks'?"),
        (["show", "nosuchrun"], "no run 'nosuchrun'"),
        (["runs", "--store", "{folder}"], "is a folder"),
    ],
)
def test_errors_stay_one_line_exit_2(
    args: list[str], message: str, cache: Path, store: Path, tmp_path: Path
) -> None:
    args = [a.replace("{folder}", str(tmp_path)) for a in args]
    if args[0] == "show":
        args += ["--store", str(store)]
    code, out, err, mods = cli(args, cache, tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], (code, err)


def test_runs_from_sqlite_equals_runs_through_sqlalchemy(store: Path, tmp_path: Path) -> None:
    st = Store(store)
    st.heartbeat(st.runs().id[1])  # the running run's lease is fresh again (it lapses in 60 s)
    url, rows = readonly.run_rows(str(store))  # type: ignore[misc]
    assert url == st.url
    full = st.runs().to_dict("records")
    assert rows == full
    assert [r["status"] for r in rows] == ["interrupted", "running", "failed", "complete"]
    assert readonly.SCHEMA_VERSION == schema.SCHEMA_VERSION
    # the command: the store file (sqlite3) and the same store as a URL (SQLAlchemy)
    fast = cli(["runs", "--store", str(store)], tmp_path, tmp_path)
    slow = cli(["runs", "--store", f"sqlite:///{store}"], tmp_path, tmp_path)
    assert fast[0] == slow[0] == 0 and fast[1] == slow[1]
    assert "sqlalchemy" in slow[3] and "sqlalchemy" not in fast[3]


def test_runs_falls_back_to_the_store_wherever_it_must(store: Path, tmp_path: Path) -> None:
    """Every case the store itself handles (creates, migrates, refuses) goes to the store."""
    assert readonly.run_rows(f"sqlite:///{store}") is None  # URLs
    assert readonly.run_rows(str(tmp_path / "missing.db")) is None  # the store creates it
    assert readonly.run_rows(str(tmp_path)) is None  # a folder: the store's error
    (tmp_path / "empty.db").write_bytes(b"")
    assert readonly.run_rows(str(tmp_path / "empty.db")) is None
    (tmp_path / "odd name.db").write_bytes(store.read_bytes())
    assert readonly.run_rows(str(tmp_path / "odd name.db")) is None  # a URL to quote
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (x)")
    assert readonly.run_rows(str(foreign)) is None
    old = tmp_path / "old.db"
    old.write_bytes(store.read_bytes())
    with sqlite3.connect(old) as c:  # an older schema: the store migrates it
        c.execute("UPDATE robustlab_meta SET value = '2' WHERE key = 'schema_version'")
    assert readonly.run_rows(str(old)) is None
    assert readonly.run_rows(str(store)) is not None


def test_catalog_key_follows_the_source_tree(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    key = catalog.source_key(tmp_path)
    assert catalog.source_key(tmp_path) == key
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert catalog.source_key(tmp_path) == key  # compiled files do not count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")  # same size, new mtime
    os.utime(tmp_path / "pkg" / "a.py", ns=(1, 1))
    assert catalog.source_key(tmp_path) != key
    key = catalog.source_key(tmp_path)
    (tmp_path / "b.py").write_text("")
    assert catalog.source_key(tmp_path) != key
    key = catalog.source_key(tmp_path)

    class EP:  # an entry point as importlib.metadata lists it (name, value)
        name, value = "mine", "plugin.module:Attack"

    assert catalog.source_key(tmp_path, {"attacks": [EP()]}) != key


def test_a_stale_or_broken_cache_is_rebuilt(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    plugins = catalog._entry_points()
    fresh = catalog._builtin(plugins)  # registries discovered in this process: written
    file = catalog.cache_file()
    data = json.loads(file.read_text())
    key = data["key"]
    assert catalog._read(file, key) == fresh
    for kind, reg in REGISTRIES.items():  # the cache holds the registries' entries
        assert [n for n, _ in fresh[kind]] == [
            n for n in reg.names() if (reg.registered_module(n) or "").startswith("robustlab.")
        ]  # built-ins only: not the plugins, nor what other tests registered in this process
    assert catalog._read(file, "another key") is None
    file.write_text("{not json")
    assert catalog._read(file, key) is None
    assert catalog._builtin(plugins) == fresh
    assert catalog._read(file, json.loads(file.read_text())["key"]) == fresh


def test_show_reads_the_run_with_sqlite3_as_the_store_does(store: Path) -> None:
    st = Store(store)
    try:
        for row in readonly.run_rows(str(store))[1]:  # type: ignore[index]
            for ref in (row["id"], row["id"][:-1]):  # an id, a unique prefix
                url, info = readonly.run_info(str(store), ref)  # type: ignore[misc]
                assert url == st.url and info == st.run_info(st.resolve(ref))
        assert readonly.run_info(str(store), "latest")[1]["id"] == st.resolve("latest")  # type: ignore[index]
        for ref in ("nosuchrun", ""):  # "" is a prefix of every run: ambiguous
            with pytest.raises(Exception) as fast:
                readonly.run_info(str(store), ref)
            with pytest.raises(Exception) as full:
                st.resolve(ref)
            assert type(fast.value) is type(full.value) and str(fast.value) == str(full.value)
    finally:
        st.close()
    assert readonly.run_info(f"sqlite:///{store}", "latest") is None  # URLs: the store's


def test_show_prints_the_kept_summary_until_the_units_change(
    store: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The first ``show`` summarises the records (pandas) and keeps the table; the next prints
    the same without reading them; a changed unit makes it summarise again."""
    cache = tmp_path_factory.mktemp("cold-cache")
    complete = readonly.run_rows(str(store))[1][-1]["id"]  # type: ignore[index]
    args = ["show", complete, "--store", str(store)]
    first = cli(args, cache, tmp_path)
    second = cli(args, cache, tmp_path)
    assert first[0] == second[0] == 0 and "accuracy" in first[1]
    assert first[1] == second[1]
    assert "pandas" in first[3] and not second[3] & set(DATA_STACK), sorted(second[3])
    copy = tmp_path / "copy.db"  # the same run, one unit finished later: another digest
    copy.write_bytes(store.read_bytes())
    with sqlite3.connect(copy) as con:
        con.execute("UPDATE units SET finished_at = finished_at + 1 WHERE run_id = ?", (complete,))
    moved = cli(["show", complete, "--store", str(copy)], cache, tmp_path)
    assert moved[1] == first[1].replace(str(store), str(copy))
    assert "pandas" in moved[3]
    kept = tmp_path / "kept.db"  # the kept table is per store: a new path summarises anew
    with sqlite3.connect(store) as src, sqlite3.connect(kept) as dst:
        src.backup(dst)
    with sqlite3.connect(kept) as con:
        con.execute("UPDATE units SET finished_at = finished_at + 1 WHERE run_id = ?", (complete,))
    again = cli(["show", complete, "--store", str(kept)], cache, tmp_path)
    assert "pandas" in again[3]
