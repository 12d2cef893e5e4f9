"""What ``robustlab list`` shows, every registered component's name and one-line doc, without
importing the components (their modules import torch, pandas, scikit-learn ...).

The built-in entries are what the registries hold after full discovery, cached in
``cache_dir()/catalog-<install>.json`` under a key made of this Python, the installed robustlab
source tree (every file's relative path, size and modification time), the registries' built-in
packages and the entry points of the ``robustlab.<kind>`` groups. Any edit, install, upgrade or
plugin change gives a new key, and the next listing discovers again (seconds: it imports
everything) and rewrites the cache. The cache also records the module that registers each built-in
name, under a key of the source tree alone (plugins cannot change which module registers a
built-in): a lookup of a built-in name (``attacks.get("pgd")``) imports just that module, and a
lookup that finds no current cache discovers everything and writes it (:func:`rebuild`). Components from plugins are never read from the cache: their
entry points are loaded on every listing, as discovery loads them. A cache that cannot be read or
written is rebuilt or skipped; the listing is the same either way.

Example::

    dict(listing(["attacks"])["attacks"])["pgd"]   # the first line of PGD's docstring
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from robustlab.core.paths import cache_dir, write_text_atomic
from robustlab.core.registry import REGISTRIES, Registry, describe

FORMAT = 2  # bump when the cached layout or the one-line rule changes
Entries = list[tuple[str, str]]


def one_line(obj: Any) -> str:
    """The line ``robustlab list`` shows for a component: its ``doc`` attribute if it has one
    (metrics), else the first line of its docstring."""
    return getattr(obj, "doc", "") or describe(obj)


def listing(kinds: Sequence[str]) -> dict[str, Entries]:
    """``(name, one-line doc)`` of every component of each of ``kinds`` (registry kinds), sorted
    by name: exactly what the registries hold after discovery, without importing the components
    where the cache is current."""
    plugins = _entry_points()
    builtin: dict[str, Entries] | None = None
    out: dict[str, Entries] = {}
    for kind in kinds:
        reg = REGISTRIES[kind]
        if reg.discovered:  # everything is imported already: the registry is the answer
            out[kind] = [(name, one_line(obj)) for name, obj in reg.items()]
            continue
        if builtin is None:
            builtin = _builtin(plugins)
            if reg.discovered:  # the cache was stale: discovery just ran in this process
                out[kind] = [(name, one_line(obj)) for name, obj in reg.items()]
                continue
        out[kind] = _with_plugins(reg, builtin[kind], plugins.get(kind, []))
    return out


def _with_plugins(reg: Registry[Any], builtin: Entries, eps: list[Any]) -> Entries:
    """The built-in entries plus the plugins' (loaded now), as discovery adds them: an entry
    point whose name is taken is skipped, and what a plugin's import registers is listed."""
    entries = dict(builtin)
    for ep in eps:
        if ep.name not in entries:
            entries[ep.name] = one_line(ep.load())
    for name, obj in reg.registered():  # what the plugins' imports registered
        entries.setdefault(name, one_line(obj))
    return sorted(entries.items())


def _builtin(plugins: dict[str, list[Any]]) -> dict[str, Entries]:
    """The built-in entries of every kind: from the cache if its key is current, else by full
    discovery (then cached)."""
    file = cache_file()
    key = source_key(_ROOT, plugins)
    cached = _read(file, key)
    if cached is not None:
        return cached
    fresh, modules = _discover_all()
    _write(file, key, fresh, modules)
    return fresh


_ROOT = Path(__file__).resolve().parents[1]
_current: dict[str, dict[str, str]] | None = None  # this process's read of the module map


def _discover_all() -> tuple[dict[str, Entries], dict[str, dict[str, str]]]:
    """Discover every registry: its built-in entries (what robustlab's modules registered) and
    which module registers each built-in name (for targeted lookups: only the names registered
    by a module of the registry's own packages, the ones its full discovery is sure to find)."""
    entries: dict[str, Entries] = {}
    modules: dict[str, dict[str, str]] = {}
    for kind, reg in REGISTRIES.items():
        found = [(n, o, reg.registered_module(n) or "") for n, o in reg.items()]
        entries[kind] = [(n, one_line(o)) for n, o, m in found if _within(m, ("robustlab",))]
        modules[kind] = {n: m for n, _, m in found if _within(m, reg.builtin_modules)}
    return entries, modules


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def import_builtin(reg: Registry[Any], name: str) -> bool | None:
    """Import the module the current cache says registers built-in ``name`` of ``reg``; whether
    ``name`` is registered now (False: the cache knows no such built-in), or None where there is
    no current cache (missing, unreadable, or written for another source tree)."""
    global _current
    if _current is None:
        _current = _read_modules(cache_file(), source_key(_ROOT))
        if _current is None:
            return None
    module = _current.get(reg.kind, {}).get(name)
    if module is None:
        return False
    importlib.import_module(module)
    return reg.registered_module(name) is not None


def rebuild(reg: Registry[Any] | None = None) -> None:
    """Discover every registry and write the cache (``reg``, the registry that asked, first: its
    discovery is the one the lookup needed, and its errors come first, as before)."""
    global _current
    if reg is not None:
        reg.names()
    plugins = _entry_points()
    fresh, modules = _discover_all()
    _write(cache_file(), source_key(_ROOT, plugins), fresh, modules)
    _current = modules


def cache_file() -> Path:
    """This installation's catalog cache (one file per robustlab source folder)."""
    where = str(Path(__file__).resolve().parents[1])
    return cache_dir() / f"catalog-{hashlib.sha256(where.encode()).hexdigest()[:16]}.json"


def source_key(root: Path, plugins: dict[str, list[Any]] | None = None) -> str:
    """A digest of everything the built-in listing depends on: the cache format, Python's version,
    the source tree under ``root`` (relative path, size and mtime of every file outside
    ``__pycache__``), the registries' built-in packages and the plugin entry points."""
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT, sys.version, str(root)]).encode())
    h.update(json.dumps({k: r.builtin_modules for k, r in REGISTRIES.items()}).encode())
    eps = {k: sorted((e.name, e.value) for e in v) for k, v in sorted((plugins or {}).items())}
    h.update(json.dumps(eps).encode())
    for rel, size, mtime in sorted(_files(root, "")):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def _files(folder: Path, prefix: str) -> Iterator[tuple[str, int, int]]:
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                if e.name != "__pycache__":
                    yield from _files(Path(e.path), f"{prefix}{e.name}/")
            elif e.is_file():
                st = e.stat()
                yield f"{prefix}{e.name}", st.st_size, st.st_mtime_ns


def _entry_points() -> dict[str, list[Any]]:
    """The plugin entry points of every registry kind, in one scan of the installed packages."""
    from importlib.metadata import entry_points  # ~50 ms: only for the listing

    eps = entry_points()
    return {kind: list(eps.select(group=f"robustlab.{kind}")) for kind in REGISTRIES}


def _read(file: Path, key: str) -> dict[str, Entries] | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data["format"] != FORMAT or data["key"] != key or set(data["kinds"]) != set(REGISTRIES):
            return None
        return {
            kind: [(str(n), str(d)) for n, d in entries] for kind, entries in data["kinds"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_modules(file: Path, source: str) -> dict[str, dict[str, str]] | None:
    """The cached name -> registering module map of every kind, if the cache is current."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data["format"] != FORMAT or data["source"] != source:
            return None
        modules = data["modules"]
        if set(modules) != set(REGISTRIES):
            return None
        return {kind: {str(n): str(m) for n, m in names.items()} for kind, names in modules.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(
    file: Path, key: str, kinds: dict[str, Entries], modules: dict[str, dict[str, str]]
) -> None:
    """Write the cache atomically (a concurrent reader sees the old file or the new one); a cache
    folder that cannot be written only costs the next listing its speed."""
    data = {
        "format": FORMAT,
        "key": key,
        "source": source_key(_ROOT),
        "kinds": kinds,
        "modules": modules,
    }
    write_text_atomic(file, json.dumps(data, indent=0))
