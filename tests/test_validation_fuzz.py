"""Fuzzing suite validation: malformed variants of the bundled suites are refused cleanly.

Each variant of a bundled suite (``src/robustlab/suites/*.yaml``) -- random key deletions, type
swaps, extreme values (NaN, inf, -1, 1e308, huge ints, huge lists, empty strings), wrong nesting,
unknown keys, garbage bytes -- goes through ``robustlab validate`` and, when refused, ``robustlab
run`` with a store: the CLI must exit 2 with exactly one line on stderr and no traceback, and the
store must stay byte-identical (or absent). A variant that happens to be valid must validate (exit
0); it is not run (some bundled suites load language models).

Seeded, in-process through typer's runner for speed; a few variants also go through real
subprocesses. ``-m slow`` runs many more seeds.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from robustlab.cli import app
from robustlab.runner.loading import load_yaml
from robustlab.store import Store

SUITES = sorted(
    (Path(__file__).resolve().parents[1] / "src" / "robustlab" / "suites").glob("*.yaml")
)
CLI = str(Path(sys.executable).parent / "robustlab")

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
EXTREMES: list[Any] = [
    math.nan, math.inf, -math.inf, -1, 0, -0.5, 1e308, -1e308, 2**64, 2**63, -(2**63) - 1, 10**30,
    "", " ", "\n", "nan", True, False, None, {}, [], [None], {"": 1}, "x" * 300, 1.5, 7, 1001,
]  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indices) into ``node``, the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _huge_list(rng: random.Random) -> list[Any]:
    # past the 1000-level cap; rarely far past it (pure-Python YAML resolution costs ~50 us/node)
    return [rng.choice([0.1, 1, 2.0])] * rng.choice([1001] * 8 + [5000, 20000])


def _deep(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


def mutate(data: dict[str, Any], rng: random.Random) -> Any:
    """One random structural mutation of suite ``data`` (a deep copy)."""
    root: Any = copy.deepcopy(data)
    paths = _paths(root)
    path = rng.choice(paths)
    op = rng.choice(["delete", "swap", "extreme", "extreme", "unknown", "nest", "huge", "deep"])
    if op == "delete" and path:
        parent = _get(root, path[:-1])
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
        return root
    if op == "swap":
        here = _get(root, path)
        pool = [p for p in paths if p and not _is_prefix(path, p) and not _is_prefix(p, path)]
        other = _get(root, rng.choice(pool)) if pool else None
        return _set(root, path, copy.deepcopy(other) if other is not here else None)
    if op == "unknown":
        dicts = [p for p in paths if isinstance(_get(root, p), dict)]
        target = _get(root, rng.choice(dicts))
        target[rng.choice(["zzz", "levelz", "param", "Name", "1"])] = rng.choice(EXTREMES)
        return root
    if op == "nest":
        here = _get(root, path)
        return _set(root, path, rng.choice([[here], {"value": here}, [[here]]]))
    if op == "huge":
        return _set(root, path, _huge_list(rng))
    if op == "deep":
        return _set(root, path, _deep(rng.choice([20, 60, 120])))
    return _set(root, path, rng.choice(EXTREMES))


def _is_prefix(a: tuple, b: tuple) -> bool:
    return b[: len(a)] == a


def garbage(text: str, rng: random.Random) -> bytes:
    """The suite's bytes with random damage: junk bytes, NUL, invalid UTF-8, truncation."""
    raw = bytearray(text.encode())
    op = rng.choice(["junk", "nul", "utf8", "truncate", "binary", "indent"])
    at = rng.randrange(len(raw))
    if op == "junk":
        raw[at:at] = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 8)))
    elif op == "nul":
        raw[at:at] = b"\x00"
    elif op == "utf8":
        raw[at:at] = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])
    elif op == "truncate":
        del raw[at:]
    elif op == "binary":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))
    else:
        raw[at:at] = b"\n\t  - "
    return bytes(raw)


def variants(seed: int, n: int) -> list[tuple[str, bytes]]:
    """``n`` malformed variants (name, file bytes), drawn with ``seed``."""
    rng = random.Random(seed)
    texts = {p.stem: p.read_text() for p in SUITES}
    datas = {k: load_yaml(t, k) for k, t in texts.items()}
    out = []
    for i in range(n):
        name = rng.choice(sorted(texts))
        if rng.random() < 0.15:
            out.append((f"{name}-garbage-{i}", garbage(texts[name], rng)))
            continue
        data: Any = datas[name]
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            data = mutate(data, rng) if isinstance(data, dict) else data
        try:
            text = yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=10**6)
        except RecursionError:  # nested "deep" mutations beyond the dumper: write the text
            text = texts[name] + "\nextra: " + "[" * 2000 + "]" * 2000 + "\n"
        out.append((f"{name}-mutant-{i}", text.encode()))
    return out


def invoke(args: list[str], cwd: Path) -> tuple[int, str, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, args, env={"COLUMNS": "200", "ROBUSTLAB_STORE": ""})
    finally:
        os.chdir(old)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"{args}: uncaught {type(r.exception).__name__}: {r.exception}")
    return r.exit_code, r.stdout, r.stderr


def _sha(p: Path) -> str | None:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None


def check_variant(name: str, content: bytes, tmp: Path, store: Path) -> str:
    """Assert the contract for one variant; returns 'valid' or 'refused'."""
    f = tmp / "suite.yaml"
    f.write_bytes(content)
    code, out, err = invoke(["validate", str(f)], tmp)
    if code == 0:
        assert "is valid" in out, (name, out, err)
        return "valid"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (name, code, err, content[:300])
    assert len(lines) == 1 and "Traceback" not in err, (name, err, content[:300])
    before = _sha(store)
    fresh = tmp / "fresh" / "new.db"
    targets = (store, fresh) if len(content) < 20_000 else (store,)  # big files: parse once less
    for target in targets:
        code, out, err = invoke(
            ["run", str(f), "--store", str(target), "--no-progress", "--out", str(tmp / "rep")], tmp
        )
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (name, "run", code, out[-500:], err)
        assert len(lines) == 1 and "Traceback" not in err, (name, "run", err)
    assert _sha(store) == before, name  # byte-identical
    assert not fresh.exists() and not (tmp / "rep").exists(), name
    return "refused"


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    p = tmp_path / "store.db"
    Store(p)  # an existing store with its schema: must stay byte-identical
    return p


def test_fuzzed_suites_are_refused_with_one_line(tmp_path: Path, store: Path) -> None:
    seen = {"valid": 0, "refused": 0}
    for name, content in variants(seed=16, n=300):
        seen[check_variant(name, content, tmp_path, store)] += 1
    assert seen["refused"] > 200, seen  # the generator does produce malformed suites


def test_fuzz_generator_covers_the_named_cases() -> None:
    """The variants include every kind of damage the issue names (so a pass means something)."""
    texts = [c for _, c in variants(seed=16, n=300)]
    assert any(b"\x00" in t for t in texts) and any(b".nan" in t for t in texts)
    assert any(b".inf" in t for t in texts) and any(b"18446744073709551616" in t for t in texts)
    assert any(b"1.0e+308" in t or b"1e+308" in t for t in texts)
    assert any(t.count(b"\n- ") > 1000 for t in texts)  # a huge list
    assert any(b"zzz" in t for t in texts) and any(b"value:" in t for t in texts)


def test_fuzzed_suites_in_real_subprocesses(tmp_path: Path, store: Path) -> None:
    """A few refused variants through the installed console script (real stderr, real exit)."""
    picked = [v for v in variants(seed=7, n=60) if b"\x00" in v[1] or b".nan" in v[1]][:2]
    picked.append(("bomb", b'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n' + b"".join(
        f"a{i}: &a{i} [{','.join(['*a' if i == 0 else f'*a{i - 1}'] * 10)}]\n".encode() for i in range(9)
    )))  # fmt: skip
    assert len(picked) == 3
    before = _sha(store)
    env = {**os.environ, "COLUMNS": "200"}
    for name, content in picked:
        (tmp_path / "v.yaml").write_bytes(content)
        for cmd in (["validate", "v.yaml"], ["run", "v.yaml", "--store", str(store)]):
            r = subprocess.run(
                [CLI, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
            )
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 2 and len(lines) == 1, (name, cmd, r.stderr)
            assert "Traceback" not in r.stderr
    assert _sha(store) == before


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_suites_many_seeds(seed: int, tmp_path: Path, store: Path) -> None:
    for name, content in variants(seed=1000 + seed, n=600):
        check_variant(name, content, tmp_path, store)
