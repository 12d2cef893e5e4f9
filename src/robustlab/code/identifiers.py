"""Token-exact identifier renaming in Python source, keeping every other character as it was.

``rename(src, {"old": "new"})`` renames NAME tokens (not attributes ``x.old``, not keyword
arguments ``f(old=1)``) and, inside strings (docstrings), calls ``old(`` -- so a docstring example
``>>> old(1)`` follows the rename while prose mentioning the word does not. Works on incomplete
code (a prompt that ends inside a function) as long as it tokenizes.

Example::

    rename("def f(x):\\n    return f(x - 1)\\n", {"f": "g"})   # 'def g(x):\\n    return g(x - 1)\\n'
"""

from __future__ import annotations

import io
import re
import tokenize


def _edits(src: str, mapping: dict[str, str]) -> list[tuple[int, int, int, str]]:
    """(row, col, end_col, text) replacements, positions as tokenize reports them."""
    out: list[tuple[int, int, int, str]] = []
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    depth = 0
    for i, t in enumerate(toks):
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        if t.type == tokenize.NAME and t.string in mapping:
            prev = toks[i - 1].string if i else ""
            nxt = toks[i + 1].string if i + 1 < len(toks) else ""
            if prev == "." or (depth > 0 and nxt == "=" and prev in ("(", ",")):
                continue
            out.append((t.start[0], t.start[1], t.end[1], mapping[t.string]))
        elif t.type == tokenize.STRING:
            new = _in_string(t.string, mapping)
            if new != t.string:
                out.append((t.start[0], t.start[1], -1, new + "\x00" + f"{t.end[0]}:{t.end[1]}"))
    return out


def _in_string(s: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        s = re.sub(rf"\b{re.escape(old)}(?=\s*\()", new, s)
    return s


def rename(src: str, mapping: dict[str, str]) -> str:
    """``src`` with the identifiers in ``mapping`` renamed (raises ``tokenize.TokenError`` /
    ``SyntaxError`` if ``src`` does not tokenize)."""
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return src
    lines = src.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    pieces: list[str] = []
    pos = 0
    for row, col, end_col, text in _edits(src, mapping):
        start = offsets[row - 1] + col
        if end_col < 0:  # a (possibly multi-line) string token
            text, end = text.split("\x00")
            er, ec = (int(v) for v in end.split(":"))
            stop = offsets[er - 1] + ec
        else:
            stop = offsets[row - 1] + end_col
        pieces += [src[pos:start], text]
        pos = stop
    pieces.append(src[pos:])
    return "".join(pieces)
