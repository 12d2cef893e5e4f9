"""Shared machinery of the code-syntax transformations (see :mod:`.syntax`)."""

from __future__ import annotations

import ast
import random
from typing import Any

from robustlab.core.registry import perturbations
from robustlab.perturbations.code._base import CodeTransform, Skip, entry_function

COMPOUND = (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.FunctionDef)
NAMES = ["tmp", "val", "res", "acc", "cur", "item", "elem", "aux", "buf", "out", "idx", "ptr"]


def _region(p: dict[str, Any]) -> tuple[list[str], ast.FunctionDef, int, int]:
    tree, fn = entry_function(p["prompt"], p["entry_point"])
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) else fn.body
    if not body:
        raise Skip("no partial code after the docstring")
    lines = p["prompt"].splitlines(keepends=True)
    return lines, fn, body[0].lineno, len(lines)


def _closed(node: ast.AST, last: int) -> bool:
    return not isinstance(node, COMPOUND) or (node.end_lineno or last) < last


class _Syntax(CodeTransform):
    family = "syntax"

    def rewrite(self, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
        """Edit ``fn`` in place; return whether anything changed."""
        raise NotImplementedError

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        lines, fn, first, last = _region(p)
        body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) else fn.body
        indent = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
        if not self.rewrite(fn, last, r):
            raise Skip("nothing to rewrite in the partial code")
        body = (
            fn.body[1:] if isinstance(fn.body[0], ast.Expr) and fn.body[0] is not body[0] else body
        )
        code = "\n".join(ast.unparse(s) for s in fn.body if s not in self._doc(fn))
        new = "".join(indent + ln + "\n" for ln in code.splitlines())
        return {**p, "prompt": "".join(lines[: first - 1]) + new}

    @staticmethod
    def _doc(fn: ast.FunctionDef) -> list[ast.stmt]:
        s = fn.body[0] if fn.body else None
        return [s] if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) else []

    @staticmethod
    def nodes(fn: ast.FunctionDef, kind: Any, last: int) -> list[Any]:
        return [n for n in ast.walk(fn) if isinstance(n, kind) and _closed(n, last) and n is not fn]


def _reg(name: str, doc: str):  # noqa: ANN202
    def deco(fn: Any) -> Any:
        perturbations.register(name)(type(name, (_Syntax,), {"rewrite": fn, "__doc__": doc}))
        return fn

    return deco


def _replace(root: ast.AST, old: ast.stmt, new: list[ast.stmt]) -> None:
    for node in ast.walk(root):
        for field in ("body", "orelse", "finalbody"):
            seq = getattr(node, field, None)
            if isinstance(seq, list) and old in seq:
                i = seq.index(old)
                seq[i : i + 1] = new
                return


def _swap_expr(root: ast.AST, old: ast.AST, new: ast.AST) -> bool:
    for node in ast.walk(root):
        for field, val in ast.iter_fields(node):
            if val is old:
                setattr(node, field, new)
                return True
            if isinstance(val, list) and any(v is old for v in val):
                val[[i for i, v in enumerate(val) if v is old][0]] = new
                return True
    return False
