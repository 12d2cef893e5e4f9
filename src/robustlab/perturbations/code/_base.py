"""Shared machinery of the code transformations: per-example seeding, docstring location, words."""

from __future__ import annotations

import ast
import keyword
import random
import re
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import VARIANT


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The transformation does not apply to this problem (the message says why)."""


class CodeTransform:
    """Base class: ``__call__(problems, variant, rng)``; subclasses define ``transform``.

    ``severity`` is ReCode's variant seed (1..5 by default, ``s`` variants = ``s`` levels); 0 is
    the identity. Each example gets its own ``random.Random`` seeded from its stream in ``rng``
    and the variant, so results do not depend on the batch.
    """

    modality = "code"
    family = "code"
    level_domain = VARIANT
    severities: tuple[float, ...] = (1, 2, 3, 4, 5)

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, x: list[dict[str, Any]], severity: float, rng: ExampleRNG) -> list[Any]:
        name = getattr(self, "registered_name", type(self).__name__)
        if not isinstance(x, list) or not all(isinstance(p, dict) and "prompt" in p for p in x):
            raise ConfigError(
                f"code perturbation {name} needs a list of problem dicts with 'prompt'"
            )
        if severity < 0 or severity != int(severity):
            raise ConfigError(f"{name}: severity is a variant number >= 0, got {severity}")
        if severity == 0:
            return [dict(p) for p in x]
        keys = rng.fork(name).keys.tolist()
        out = []
        for p, k in zip(x, keys, strict=True):
            r = random.Random(seed_from(k, int(severity)))
            try:
                out.append(self.transform(dict(p), r))
            except Skip as e:
                out.append({**p, "skipped": f"{name}: {e}"})
            except SyntaxError as e:
                out.append({**p, "skipped": f"{name}: prompt does not parse ({e.msg})"})
        return out


def entry_function(prompt: str, entry: str) -> tuple[ast.Module, ast.FunctionDef]:
    """Parse ``prompt`` and find the entry-point function (Skip if absent)."""
    tree = ast.parse(prompt)
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry]
    if not fns:
        raise Skip(f"no function {entry!r} in the prompt")
    return tree, fns[-1]


DOC_RE = re.compile(r'("""|\'\'\')(.*?)\1', re.S)


def docstring_span(prompt: str, entry: str) -> tuple[int, int]:
    """Character span of the entry point's docstring *content* (falls back to a regex)."""
    try:
        _, fn = entry_function(prompt, entry)
        node = fn.body[0] if fn.body else None
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            lines = prompt.splitlines(keepends=True)
            start = sum(map(len, lines[: node.lineno - 1])) + node.col_offset
            end = sum(map(len, lines[: node.end_lineno - 1])) + node.end_col_offset  # type: ignore[operator]
            m = DOC_RE.search(prompt, start, end)
            if m:
                return m.start(2), m.end(2)
    except (SyntaxError, Skip):
        pass
    m = DOC_RE.search(prompt, prompt.find(f"def {entry}") if f"def {entry}" in prompt else 0)
    if m is None:
        raise Skip("no docstring")
    return m.start(2), m.end(2)


WORD = re.compile(r"[A-Za-z]{3,}")
EXAMPLE_LINE = re.compile(r">>>|==|=>|->|\w\(|\[|\{|\d")


def identifiers(prompt: str) -> set[str]:
    """Every identifier-looking token of the prompt's code (kept out of docstring edits)."""
    code = DOC_RE.sub("", prompt)
    return set(re.findall(r"[A-Za-z_]\w*", code)) | set(keyword.kwlist) | {"True", "False", "None"}


def edit_docstring_words(p: dict[str, Any], r: random.Random, fn: Any, rate: float) -> dict:
    """Apply ``fn(word, r) -> str`` to a ``rate`` fraction of the editable docstring words.

    Editable: alphabetic words of length >= 3 on prose lines (not examples, code or quotes), that
    are not identifiers of the code. Raises Skip when there is nothing to edit.
    """
    a, b = docstring_span(p["prompt"], p["entry_point"])
    doc = p["prompt"][a:b]
    protect = identifiers(p["prompt"])
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in doc.splitlines(keepends=True):
        if not EXAMPLE_LINE.search(line):
            quoted = [m.span() for m in re.finditer(r"'[^']*'|\"[^\"]*\"|`[^`]*`", line)]
            for m in WORD.finditer(line):
                if m.group() not in protect and not any(s <= m.start() < e for s, e in quoted):
                    spans.append((pos + m.start(), pos + m.end()))
        pos += len(line)
    if not spans:
        raise Skip("no editable docstring words")
    k = max(1, round(rate * len(spans)))
    chosen = sorted(r.sample(range(len(spans)), min(k, len(spans))))
    out, last = [], 0
    for i in chosen:
        s, e = spans[i]
        out += [doc[last:s], fn(doc[s:e], r)]
        last = e
    out.append(doc[last:])
    new = "".join(out)
    return {**p, "prompt": p["prompt"][:a] + new + p["prompt"][b:]}


def edit_docstring_text(p: dict[str, Any], fn: Any) -> dict[str, Any]:
    """Apply ``fn(prose_line) -> str`` to each prose line of the docstring."""
    a, b = docstring_span(p["prompt"], p["entry_point"])
    lines = p["prompt"][a:b].splitlines(keepends=True)
    new = "".join(ln if EXAMPLE_LINE.search(ln) else fn(ln) for ln in lines)
    return {**p, "prompt": p["prompt"][:a] + new + p["prompt"][b:]}
