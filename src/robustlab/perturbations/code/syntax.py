"""Code-syntax transformations on the partial code of the prompt (ReCode S2 family "syntax", NatGen;
ContraBERT S10 PL operators), via ``ast``.

They rewrite the statements that follow the entry point's docstring (ReCode's *partial code*
setting, see ``load_humaneval(partial=True)``); compound statements are only rewritten when they
are complete (the solution cannot continue them). Prompts that do not parse, or have no partial
code, are skipped with the reason recorded. Variable renaming returns ``renames`` so a solution
can follow. Threat model: semantically equivalent rewrites of code the model must continue.

Example::

    t = perturbations.create("code_for_while")
    t(load_humaneval(partial=True), 1, rng)
"""

from __future__ import annotations

import ast
import random
from typing import Any

from robustlab.code.identifiers import rename
from robustlab.core.registry import perturbations
from robustlab.perturbations.code._base import CodeTransform, Skip, identifiers
from robustlab.perturbations.code._syntax_base import NAMES, _closed, _reg, _region, _replace


@_reg(
    "code_for_while",
    "Rewrite a complete ``for`` loop as a ``while`` loop over an iterator (NatGen).",
)
def _for_while(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    loops = [n for n in self.nodes(fn, ast.For, last) if not n.orelse]
    if not loops:
        return False
    loop = r.choice(loops)
    it = f"_it{r.randrange(100)}"
    new = ast.parse(
        f"{it} = iter(X)\nwhile True:\n    try:\n        T = next({it})\n    except StopIteration:\n        break\n"
    ).body
    new[0].value.args[0] = loop.iter  # type: ignore[attr-defined]
    new[1].body[0].body[0].targets[0] = loop.target  # type: ignore[attr-defined]
    new[1].body += loop.body  # type: ignore[attr-defined]
    _replace(fn, loop, new)
    return True


@_reg("code_if_else_flip", "Negate an ``if`` condition and swap its branches (NatGen block swap).")
def _if_flip(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    cands = [n for n in self.nodes(fn, ast.If, last) if n.orelse]
    if not cands:
        return False
    n = r.choice(cands)
    n.test = ast.UnaryOp(ast.Not(), n.test)
    n.body, n.orelse = n.orelse, n.body
    return True


@_reg(
    "code_dead_code",
    "Insert an unused statement (dead code) in the partial code (NatGen; ContraBERT).",
)
def _dead(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    body = fn.body[1:] if self._doc(fn) else fn.body
    v = f"_{r.choice(NAMES)}{r.randrange(10)}"
    stmt = r.choice(
        [f"{v} = 0", f"while False:\n    {v} = 1", f"if False:\n    {v} = None", f"{v} = []"]
    )
    i = r.randrange(len(body))  # before an existing statement: never after an open block
    fn.body.insert(fn.body.index(body[i]), *ast.parse(stmt).body)
    return True


@_reg(
    "code_lambda_def",
    "Convert ``f = lambda x: e`` to ``def f(x): return e`` and back (lambda<->def).",
)
def _lambda(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    for node in ast.walk(fn):
        for field in ("body", "orelse"):
            seq = getattr(node, field, None)
            if not isinstance(seq, list):
                continue
            for i, s in enumerate(seq):
                if (
                    isinstance(s, ast.Assign)
                    and len(s.targets) == 1
                    and isinstance(s.targets[0], ast.Name)
                    and isinstance(s.value, ast.Lambda)
                ):
                    f = ast.FunctionDef(
                        s.targets[0].id,
                        s.value.args,
                        [ast.Return(s.value.body)],
                        [],
                        None,
                        None,
                        [],
                    )
                    seq[i] = ast.fix_missing_locations(f)
                    return True
                if (
                    isinstance(s, ast.FunctionDef)
                    and _closed(s, last)
                    and len(s.body) == 1
                    and isinstance(s.body[0], ast.Return)
                    and s.body[0].value
                    and not s.decorator_list
                ):
                    seq[i] = ast.Assign(
                        [ast.Name(s.name, ast.Store())],
                        ast.Lambda(s.args, s.body[0].value),
                        lineno=0,
                    )
                    return True
    return False


@_reg(
    "code_statement_swap",
    "Swap two adjacent independent statements (ContraBERT statement permutation).",
)
def _swap(self: Any, fn: ast.FunctionDef, last: int, r: random.Random) -> bool:
    simple = (ast.Assign, ast.AugAssign, ast.AnnAssign)
    body = fn.body[1:] if self._doc(fn) else fn.body
    pairs = []
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, simple) and isinstance(b, simple) and (b.end_lineno or 0) < last:
            wa, ra = _names(a)
            wb, rb = _names(b)
            if not (wa & (rb | wb)) and not (wb & ra) and not _calls(a) and not _calls(b):
                pairs.append((a, b))
    if not pairs:
        return False
    a, b = r.choice(pairs)
    i = fn.body.index(a)
    fn.body[i], fn.body[i + 1] = b, a
    return True


def _names(s: ast.stmt) -> tuple[set[str], set[str]]:
    w = {n.id for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    rd = {n.id for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name):
        rd.add(s.target.id)
    return w, rd


def _calls(s: ast.stmt) -> bool:
    return any(isinstance(n, ast.Call | ast.Subscript | ast.Attribute) for n in ast.walk(s))


@perturbations.register("code_var_rename")
class VarRename(CodeTransform):
    """Rename a local variable of the partial code (ReCode VarRenamer; ContraBERT variable renaming).

    Parameters are kept (tests may pass them by keyword). Returns ``renames`` {old: new}.
    """

    family = "syntax"

    def transform(self, p: dict[str, Any], r: random.Random) -> dict[str, Any]:
        lines, fn, first, last = _region(p)
        args = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
        region = "".join(lines[first - 1 :])
        local = sorted(
            {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            - args
        )
        local = [v for v in local if v in region]
        if not local:
            raise Skip("no local variable in the partial code")
        old = r.choice(local)
        taken = identifiers(p["prompt"])
        new = next(
            (n for n in r.sample(NAMES, len(NAMES)) if n not in taken), f"{old}_{r.randrange(99)}"
        )
        renames = {**p.get("renames", {}), old: new}
        return {
            **p,
            "prompt": "".join(lines[: first - 1]) + rename(region, {old: new}),
            "renames": renames,
        }
