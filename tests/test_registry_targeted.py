"""Targeted lookups (issue 22): with a current catalog, ``get``/``create``/``levels`` of a built-in
name import only the module that registers it (not the whole package), and give exactly what full
discovery gives; a stale catalog, an unknown name or a plugin falls back to full discovery.

Each check runs in fresh interpreters (discovery cannot be undone in a process), sharing one
catalog cache written once by full discovery in this module's fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

UNRELATED = ("robustlab.attacks.fab", "robustlab.certify.milp", "robustlab.code.sandbox")

# every name of every registry: (kind, name, module, qualname, levels) and whether a full
# discovery ran; TARGETED does only lookups, FULL discovers everything first
RECORD = """
import json, sys
from robustlab.core import registry
full = sys.argv[1] == "full"
names = json.loads(sys.argv[2])
if full:
    for reg in registry.REGISTRIES.values():
        reg.names()
out = []
for kind, name in names:
    reg = registry.REGISTRIES[kind]
    obj = reg.get(name)
    try:
        lv = repr(reg.levels(name))
    except Exception as e:  # a domain that needs parameters
        lv = type(e).__name__
    out.append([kind, name, getattr(obj, "__module__", ""), getattr(obj, "__qualname__", ""), lv])
discovered = sorted(k for k, r in registry.REGISTRIES.items() if r.discovered)
print(json.dumps({"out": out, "discovered": discovered}))
"""

FEW = """
import json, sys
from robustlab.core.registry import attacks, models, perturbations
m = models.create("digits-cnn")
pgd = attacks.get("pgd")
noise = perturbations.get("gaussian_noise")
info = {
    "model": [type(m).__module__, type(m).__qualname__],
    "pgd": [pgd.__module__, pgd.__qualname__, repr(attacks.levels("pgd"))],
    "noise": [noise.__module__, noise.__qualname__, repr(perturbations.levels("gaussian_noise"))],
    "same": attacks.get("pgd") is pgd and sys.modules[pgd.__module__].PGD is pgd,
    "discovered": [r.kind for r in (attacks, models, perturbations) if r.discovered],
}
if sys.argv[1] == "full":  # what a run imported before: every registry it looks up discovered
    from robustlab.core.registry import REGISTRIES
    for reg in REGISTRIES.values():
        reg.names()
info["modules"] = sorted(m for m in sys.modules if m.startswith("robustlab"))
print(json.dumps(info))
"""


def _run(code: str, cache: Path, *args: str) -> Any:
    env = {**os.environ, "ROBUSTLAB_CACHE": str(cache)}
    r = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    """A catalog written by full discovery (a first lookup with no catalog), and every built-in
    (kind, name) it records a module for."""
    from robustlab.core.paths import cache_dir

    d = tmp_path_factory.mktemp("cache")
    for sub in ("models", "data"):  # the trained models and data the other tests use
        (cache_dir() / sub).mkdir(parents=True, exist_ok=True)
        (d / sub).symlink_to(cache_dir() / sub, target_is_directory=True)
    code = (
        "from robustlab.core.registry import attacks; attacks.get('pgd');"
        "from robustlab.core.registry import REGISTRIES;"
        "print(all(r.discovered for r in REGISTRIES.values()))"
    )
    env = {**os.environ, "ROBUSTLAB_CACHE": str(d)}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "True"  # no catalog: everything discovered once and cached
    (file,) = d.glob("catalog-*.json")
    data = json.loads(file.read_text())
    names = [[k, n] for k, mods in sorted(data["modules"].items()) for n in sorted(mods)]
    return d, names


def test_a_lookup_imports_only_the_registering_module(cache: Any) -> None:
    d, _ = cache
    new = _run(FEW, d, "targeted")
    assert new["discovered"] == []  # no full discovery ran
    assert not set(UNRELATED) & set(new["modules"])
    assert new["same"] is True
    old = _run(FEW, d, "full")
    assert set(UNRELATED) <= set(old["modules"])
    for key in ("model", "pgd", "noise"):
        assert new[key] == old[key]
    assert len(new["modules"]) < len(old["modules"]) / 2


def test_every_builtin_name_resolves_targeted_as_full_discovery_does(cache: Any) -> None:
    d, names = cache
    assert len(names) > 100 and {k for k, _ in names} >= {"attacks", "models", "metrics"}
    arg = json.dumps(names)
    new = _run(RECORD, d, "targeted", arg)
    old = _run(RECORD, d, "full", arg)
    assert new["out"] == old["out"]
    # every name was found by importing its module: no registry needed a full discovery
    assert new["discovered"] == []


def test_a_stale_catalog_or_an_unknown_name_discovers_fully(
    cache: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustlab.core import catalog, registry
    from robustlab.core.errors import UnknownComponentError

    d, _ = cache
    unknown = """
from robustlab.core.registry import attacks
try:
    attacks.get("pgdd")
except Exception as e:
    print(__import__("json").dumps([type(e).__name__, str(e), attacks.discovered]))
"""
    with_catalog = _run(unknown, d)
    assert with_catalog == _run(unknown, tmp_path)  # current catalog, none: the same error
    name, msg, discovered = with_catalog
    assert name == "UnknownComponentError" and "did you mean 'pgd'" in msg and discovered
    # a key that does not match the source tree: no module map; a rebuild writes a current one
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(d))
    monkeypatch.setattr(catalog, "_current", None)
    real = catalog.source_key
    monkeypatch.setattr(catalog, "source_key", lambda root, plugins=None: "stale")
    assert catalog.import_builtin(registry.attacks, "pgd") is None
    monkeypatch.setattr(catalog, "source_key", real)
    monkeypatch.setattr(catalog, "_current", None)
    assert catalog.import_builtin(registry.attacks, "pgd") is True
    assert catalog.import_builtin(registry.attacks, "no-such-attack") is False
    with pytest.raises(UnknownComponentError, match="did you mean 'pgd'"):
        registry.attacks.get("pgdd")
