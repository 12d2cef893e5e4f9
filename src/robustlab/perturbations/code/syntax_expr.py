"""Expression-level code-syntax transformations (ReCode S2 "syntax" family, NatGen): operand
swap, boolean rewrites, comparison negation -- on the partial code, see :mod:`.syntax`.

Example::

    perturbations.create("code_operand_swap")(load_humaneval(partial=True), 1, rng)
"""

from __future__ import annotations

import ast
import random
from typing import Any

from robustlab.perturbations.code._syntax_base import _reg, _swap_expr


@_reg(
    "code_operand_swap",
    "Swap the operands of a comparison: ``a < b`` -> ``b > a`` (ReCode/NatGen operand swap).",
)
def _operand_swap(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    flip = {
        ast.Lt: ast.Gt,
        ast.Gt: ast.Lt,
        ast.LtE: ast.GtE,
        ast.GtE: ast.LtE,
        ast.Eq: ast.Eq,
        ast.NotEq: ast.NotEq,
    }
    cands = [
        c for c in self.nodes(fn, ast.Compare, last) if len(c.ops) == 1 and type(c.ops[0]) in flip
    ]
    if not cands:
        return False
    c = r.choice(cands)
    c.left, c.comparators = c.comparators[0], [c.left]
    c.ops = [flip[type(c.ops[0])]()]
    return True


@_reg(
    "code_bool_rewrite",
    "Rewrite boolean literals and conditions: ``True`` -> ``not False``, ``a and b`` -> ``not (not a or not b)``.",
)
def _bool(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    lits = [n for n in ast.walk(fn) if isinstance(n, ast.Constant) and isinstance(n.value, bool)]
    ops = [n for n in ast.walk(fn) if isinstance(n, ast.BoolOp) and len(n.values) == 2]
    if not lits and not ops:
        return False
    target = r.choice(lits + ops)
    if isinstance(target, ast.Constant):
        new: ast.expr = ast.UnaryOp(ast.Not(), ast.Constant(not target.value))
    else:
        other = ast.Or() if isinstance(target.op, ast.And) else ast.And()
        neg = [ast.UnaryOp(ast.Not(), v) for v in target.values]
        new = ast.UnaryOp(ast.Not(), ast.BoolOp(other, neg))
    return _swap_expr(fn, target, new)


@_reg(
    "code_comparison_rewrite",
    "Rewrite comparisons by negation: ``a == b`` -> ``not a != b``, ``a in b`` -> ``not a not in b``.",
)
def _cmp(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    neg = {
        ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq,
        ast.In: ast.NotIn,
        ast.NotIn: ast.In,
        ast.Is: ast.IsNot,
        ast.IsNot: ast.Is,
    }
    cands = [
        c for c in self.nodes(fn, ast.Compare, last) if len(c.ops) == 1 and type(c.ops[0]) in neg
    ]
    if not cands:
        return False
    c = r.choice(cands)
    new = ast.UnaryOp(ast.Not(), ast.Compare(c.left, [neg[type(c.ops[0])]()], c.comparators))
    return _swap_expr(fn, c, new)
