"""Code-format transformations (ReCode S2 family "format"): layout changes only.

Newlines inserted or removed, tabs for spaces, another indentation width, long lines split inside
brackets, the docstring turned into ``#`` comments. Indentation changes return ``indent`` (the new
unit) so a solution written with 4 spaces can be mapped. Threat model: formatting styles a user
might have.

Example::

    perturbations.create("format_tab_indent")(problems, 1, rng)[0]["indent"]   # '\\t'
"""

from __future__ import annotations

import io
import random
import re
import tokenize
from typing import Any

from robustlab.core.registry import perturbations
from robustlab.perturbations.code._base import CodeTransform, Skip, docstring_span


def _string_lines(prompt: str) -> set[int]:
    """0-based lines that lie inside (or continue) a multi-line token, or end with a backslash."""
    inside: set[int] = set()
    for t in tokenize.generate_tokens(io.StringIO(prompt).readline):
        if t.end[0] > t.start[0]:
            inside.update(range(t.start[0] - 1, t.end[0] - 1))
    for i, ln in enumerate(prompt.splitlines()):
        if ln.rstrip().endswith("\\"):
            inside.add(i)
    return inside


class _Format(CodeTransform):
    family = "format"


@perturbations.register("format_newline_insertion")
class NewlineInsertion(_Format):
    """Insert blank lines after random code lines (ReCode NewlineRandom)."""

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        lines = p["prompt"].splitlines(keepends=True)
        bad = _string_lines(p["prompt"])
        ok = [i for i in range(len(lines) - 1) if i not in bad and lines[i].strip()]
        if not ok:
            raise Skip("no line to break after")
        for i in sorted(r.sample(ok, max(1, len(ok) // 4)), reverse=True):
            lines.insert(i + 1, "\n")
        return {**p, "prompt": "".join(lines)}


@perturbations.register("format_newline_removal")
class NewlineRemoval(_Format):
    """Remove the blank lines of the prompt (outside strings)."""

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        lines = p["prompt"].splitlines(keepends=True)
        bad = _string_lines(p["prompt"])
        keep = [ln for i, ln in enumerate(lines) if ln.strip() or i in bad or i == len(lines) - 1]
        return {**p, "prompt": "".join(keep)}


@perturbations.register("format_newline_after_code")
class NewlineAfterCode(_Format):
    """Append blank lines after the prompt (ReCode NewlineAfterCode)."""

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        return {**p, "prompt": p["prompt"] + "\n" * r.randint(1, 3)}


def reindent(text: str, unit: str, width: int = 4) -> str:
    """Replace each leading group of ``width`` spaces by ``unit`` on every line."""

    def sub(m: re.Match[str]) -> str:
        n = len(m.group())
        return unit * (n // width) + " " * (n % width)

    return re.sub(r"^ +", sub, text, flags=re.M)


class _Indent(_Format):
    unit = "\t"

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        if p.get("indent", "    ") != "    ":
            raise Skip("prompt already re-indented")
        return {**p, "prompt": reindent(p["prompt"], self.unit), "indent": self.unit}


@perturbations.register("format_tab_indent")
class TabIndent(_Indent):
    """Indent with tabs instead of 4 spaces (ReCode TabIndent)."""

    unit = "\t"


@perturbations.register("format_indent_width")
class IndentWidth(_Indent):
    """Indent with 2 spaces instead of 4."""

    unit = "  "


@perturbations.register("format_line_split")
class LineSplit(_Format):
    """Split a line after an opening bracket or a comma inside brackets (ReCode LineSplit)."""

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        src = p["prompt"]
        depth, cands = 0, []
        toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
        for i, t in enumerate(toks):
            if t.type == tokenize.OP and t.string in "([{":
                depth += 1
                nxt = toks[i + 1] if i + 1 < len(toks) else t
                if nxt.start[0] == t.end[0] and nxt.string not in ")]}" and nxt.type != tokenize.NL:
                    cands.append(t.end)
            elif t.type == tokenize.OP and t.string in ")]}":
                depth -= 1
            elif t.type == tokenize.OP and t.string == "," and depth > 0:
                cands.append(t.end)
        if not cands:
            raise Skip("no bracket to split inside")
        row, col = r.choice(cands)
        lines = src.splitlines(keepends=True)
        ln = lines[row - 1]
        indent = ln[: len(ln) - len(ln.lstrip())]
        lines[row - 1] = ln[:col] + "\n" + indent + "        " + ln[col:].lstrip(" ")
        return {**p, "prompt": "".join(lines)}


@perturbations.register("format_doc_to_comments")
class DocToComments(_Format):
    """Turn the docstring into ``#`` comments at the same indentation (ReCode DocString2Comments)."""

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        src = p["prompt"]
        a, b = docstring_span(src, p["entry_point"])
        start = src.rfind("\n", 0, a) + 1
        end = src.find("\n", b)
        end = len(src) if end < 0 else end + 1
        quote = src[a - 3 : a]
        if src[start:a].strip() != quote or src[b:end].strip() != quote:
            raise Skip("docstring shares its lines with code")
        indent = src[start : a - 3]
        body = [ln.strip() for ln in src[a:b].strip("\n").splitlines()]
        com = "".join(f"{indent}# {ln}".rstrip() + "\n" for ln in body)
        return {**p, "prompt": src[:start] + com + src[end:]}
