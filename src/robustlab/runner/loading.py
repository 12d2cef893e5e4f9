"""Reading suites safely: bounded YAML, ``--set`` overrides, bundled suite names.

A suite file is data from a possibly careless or hostile user, so before anything is constructed:

- the file is at most :data:`MAX_BYTES`, UTF-8 text without NUL bytes;
- YAML is read with the safe loader, booleans as in YAML 1.2 (only ``true``/``false``: ``cache:
  off`` stays the string ``"off"``; ``bool`` parameters still accept ``yes``/``no``/``on``/``off``,
  see :func:`robustlab.core.registry.check_params`);
- the composed node graph is checked before it becomes Python objects: at most :data:`MAX_NODES`
  nodes once every alias is expanded (a 1.4 KB "billion laughs" file expands to 10^9), no
  recursive aliases, nesting at most :data:`MAX_DEPTH` deep;
- values are plain data (mappings, lists, strings, numbers, booleans, null): no dates or binary.

Every problem raises :class:`~robustlab.core.errors.ConfigError` with one line naming the culprit.

Example::

    data = load_yaml("name: t\\nmodel: {name: digits-mlp}\\ndata: {name: digits}", "<yaml>")
    apply_overrides(data, ["probes[0].levels=[0.1]"])  # IndexError-free: ConfigError instead
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from robustlab.core.errors import ConfigError

MAX_BYTES = 1_000_000  # a suite file (or --set value) larger than this is refused
MAX_NODES = 100_000  # YAML nodes after expanding aliases
MAX_DEPTH = 50  # nesting of mappings and lists

_BOOL = "tag:yaml.org,2002:bool"


# libyaml's parser and composer where available (10-50x faster on large files), else pure Python
_Base: Any = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """The safe loader with YAML 1.2 booleans (see the resolvers below)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` from the parser's events alone."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (line {line})")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _expanded_size(root: Node) -> int:
    """Nodes under ``root`` with every alias expanded (memoised over the shared node graph, so a
    bomb is measured without being built); raises past :data:`MAX_NODES`, on cycles or depth."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key], depths[key]
        if key in active:
            mark = node.start_mark
            raise ConfigError(f"recursive YAML alias (line {mark.line + 1})")
        size, depth = 1, 1
        if isinstance(node, SequenceNode | MappingNode):
            active.add(key)
            children = (
                node.value
                if isinstance(node, SequenceNode)
                else [n for pair in node.value for n in pair]
            )
            for child in children:
                s, d = visit(child)
                size += s
                depth = max(depth, d + 1)
                if size > MAX_NODES:
                    raise ConfigError(
                        f"the document expands to more than {MAX_NODES:,} YAML nodes "
                        "(aliases included): refusing it"
                    )
                if depth > MAX_DEPTH:
                    raise ConfigError(
                        f"nested more than {MAX_DEPTH} levels deep once aliases are expanded"
                    )
            active.discard(key)
        sizes[key], depths[key] = size, depth
        return size, depth

    try:
        return visit(root)[0]
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep") from None


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML ``text`` (from ``where``, for messages) into plain data, within the limits."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_BYTES:,} characters: refusing it")
    if "\x00" in text:
        raise ConfigError(f"{where}: contains NUL bytes: not a YAML text file")
    loader = _Loader(text)
    try:
        _check_depth(text)  # before composing: the composer recurses per nesting level
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node)  # aliases expanded, still without building anything
        data = loader.construct_document(node) if node is not None else None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{where}: malformed YAML{pos}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()
    _check_plain(data, where, "")
    return data


_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str, path: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, _SCALARS):
                raise ConfigError(f"{where}: {path or 'top level'}: keys must be plain scalars")
            _check_plain(v, where, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, where, f"{path}.{i}" if path else str(i))
    elif not isinstance(value, _SCALARS):
        raise ConfigError(
            f"{where}: {path or 'document'}: unsupported YAML value of type "
            f"{type(value).__name__} ({str(value)[:40]!r}); quote it to give a string"
        )


def read_text(path: Path) -> str:
    """A suite file's text: at most :data:`MAX_BYTES`, UTF-8, no NUL bytes."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"suite file {str(path)!r} cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"suite file {str(path)!r} is larger than {MAX_BYTES:,} bytes")
    if b"\x00" in raw:
        raise ConfigError(f"suite file {str(path)!r} contains NUL bytes: not a YAML text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"suite file {str(path)!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
            f"{e.start})"
        ) from None


def find_suite(path: str) -> Path:
    """A suite file, or the bundled suite of that name."""
    p = Path(path)
    if p.is_file():
        return p
    if p.exists():
        raise ConfigError(f"suite {path!r} is not a regular file")
    if re.fullmatch(r"[A-Za-z0-9_.-]+", path):
        bundled = files("robustlab") / "suites" / f"{path}.yaml"
        if bundled.is_file():
            return Path(str(bundled))
    names = sorted(p.stem for p in Path(str(files("robustlab") / "suites")).glob("*.yaml"))
    raise ConfigError(
        f"suite {path!r} is neither a file nor a bundled suite (bundled: {', '.join(names)})"
    )


# --set overrides ----------------------------------------------------------------------------------
_NAME = re.compile(r"[^.\[\]=]+")


def parse_path(key: str) -> list[str | int]:
    """``a.b[0].c`` or ``a.b.0.c`` -> ``["a", "b", 0, "c"]`` (dotted digits stay strings: they
    index a list, or name a mapping key); malformed paths raise :class:`ConfigError`."""
    what = f"--set {key!r}"
    if not key:
        raise ConfigError("--set needs KEY=VALUE with a non-empty KEY")
    parts: list[str | int] = []
    i = 0
    while i < len(key):
        if key[i] == "[":
            j = key.find("]", i)
            if j < 0:
                raise ConfigError(f"{what}: unbalanced '[' at position {i}")
            inner = key[i + 1 : j].strip()
            if not re.fullmatch(r"\d+", inner):
                raise ConfigError(f"{what}: list index [{inner}] must be an integer >= 0")
            if not parts:
                raise ConfigError(f"{what}: an index needs a field before it")
            parts.append(int(inner))
            i = j + 1
        elif key[i] == "]":
            raise ConfigError(f"{what}: unbalanced ']' at position {i}")
        elif key[i] == ".":
            if not parts or i + 1 >= len(key) or key[i + 1] in ".[]":
                raise ConfigError(f"{what}: empty path part at position {i}")
            i += 1
            m = _NAME.match(key, i)
            if not m:
                raise ConfigError(f"{what}: empty path part at position {i}")
            parts.append(m.group().strip())
            i = m.end()
        else:
            if parts:
                raise ConfigError(f"{what}: expected '.' or '[' at position {i}")
            m = _NAME.match(key, i)
            assert m is not None
            parts.append(m.group().strip())
            i = m.end()
    if any(p == "" for p in parts):
        raise ConfigError(f"{what}: empty path part")
    return parts


def apply_overrides(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``--set a.b[0].c=value`` overrides (the value read as YAML) to suite data in place.

    Missing mapping keys on the way are created; list indices must exist; a field of a scalar, a
    name used as a list index or an index on a mapping is an error naming the path."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        parts = _shorthand(data, parse_path(key.strip()), key)
        value = load_yaml(raw, f"--set {key.strip()!r} value")
        node: Any = data
        for depth, part in enumerate(parts):
            here = _show(parts[:depth]) or "the suite"
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if isinstance(part, str) and not part.isdigit():
                    raise ConfigError(
                        f"--set {key!r}: {here} is a list: index it with a number, not {part!r}"
                    )
                idx = int(part)
                if idx >= len(node):
                    raise ConfigError(
                        f"--set {key!r}: index {idx} is out of range ({here} has {len(node)} items)"
                    )
                if last:
                    node[idx] = value
                else:
                    node = _child(node, idx)
            elif isinstance(node, dict):
                if isinstance(part, int):
                    raise ConfigError(f"--set {key!r}: {here} is a mapping, not a list: use .name")
                if last:
                    node[part] = value
                else:
                    node = _child(node, part)
            else:
                raise ConfigError(
                    f"--set {key!r}: {here} is a {type(node).__name__} ({node!r}), "
                    f"so it has no field {part!r}"
                )
    return data


def _shorthand(data: dict[str, Any], parts: list[str | int], key: str) -> list[str | int]:
    """``model...`` addresses the one model of a suite written with the ``model:`` shorthand,
    which parsing turned into ``models: [...]`` (the data overrides apply to)."""
    models = data.get("models")
    if not parts or parts[0] != "model" or "model" in data or not isinstance(models, list):
        return parts
    if len(models) != 1:
        raise ConfigError(f"--set {key!r}: the suite has {len(models)} models: use models[i]")
    return ["models", 0, *parts[1:]]


def _child(node: Any, key: Any) -> Any:
    if (isinstance(node, dict) and key not in node) or node[key] is None:
        node[key] = {}  # a missing or unset (null) section: start it
    return node[key]


def _show(parts: list[str | int]) -> str:
    shown = (f"[{p}]" if isinstance(p, int) or p.isdigit() else f".{p}" for p in parts)
    return "".join(shown).lstrip(".")


def load_suite(path: str, sets: list[str] | None = None, seed: int | None = None) -> Any:
    """The :class:`~robustlab.runner.suite.Suite` in file (or bundled suite) ``path``, with
    ``--set`` overrides and a seed override applied before validation."""
    from robustlab.runner.suite import Suite

    p = find_suite(path)
    data = load_yaml(read_text(p), str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a suite must be a YAML mapping, got {type(data).__name__}")
    if sets or seed is not None:
        # overrides apply to the suite as written plus its defaults (so probes.0.norm exists)
        data = Suite.parse(data, str(p)).model_dump(mode="json")
        apply_overrides(data, list(sets or []))
        if seed is not None:
            data["seed"] = seed
    return Suite.parse(data, str(p))
