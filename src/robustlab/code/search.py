"""Code search and clone detection on HumanEval: (docstring, function) pairs and their variants.

Construction (deterministic), as in CodeSearchNet-style code search (Husain et al., 2019):

- the **query** of a problem is the prose of its entry point's docstring: the lines before the
  first example (a line holding ``>>>``, or starting ``Example``/``For example``/``Note``), with
  whitespace collapsed (the whole docstring when that leaves nothing);
- the **function** is the prompt plus the canonical solution with the entry point's docstring
  removed (imports and helper functions kept), so the query does not occur in its document;
- a **transformed function** applies a registered code perturbation (``code_var_rename``,
  ``code_dead_code``, ``code_statement_swap``, ``func_random_name``, ...) to the *whole*
  function (prompt + solution, the docstring still in place so the operators find the body),
  then removes the docstring; a list of operators is applied in turn (:data:`HEAVY`: three
  variable renamings, two dead-code insertions, a statement swap and a function renaming). Where the operator does not apply (no local variable, no pair of
  independent statements), the function is unchanged and ``changed`` is False.
- the **split** is a fixed permutation of the 164 problems (seed 0): the first ``n_train`` are
  the training problems, the rest the test problems (default 100 / 64).

Clone detection (:func:`clone_auroc`): a function and its transformed variant are a clone pair;
a function and another problem's transformed function a non-clone pair; the score is the cosine
similarity of their embeddings, summarised by the AUROC (ContraBERT's clone-detection probe).

Example::

    probs = load_humaneval()
    train, test = split(probs)
    query_of(test[0]), function_of(test[0])
    texts, changed = transformed_functions(test, "code_var_rename", 1)
    clone_auroc(models.create("minilm"), [function_of(p) for p in test], texts)
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG, seed_from

N_PROBLEMS = 164
HEAVY = [
    "code_var_rename", "code_var_rename", "code_var_rename", "code_dead_code", "code_dead_code",
    "code_statement_swap", "func_random_name",
]  # fmt: skip
_EXAMPLE = re.compile(r">>>|^\s*(for )?examples?\b|^\s*note\b|^\s*e\.g\.", re.I)


def _entry(tree: ast.Module, entry: str) -> ast.FunctionDef:
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry]
    if not fns:
        raise ConfigError(f"code search: no function {entry!r} in the problem's code")
    return fns[-1]


def _doc_node(fn: ast.FunctionDef) -> ast.Expr | None:
    """The docstring statement: the first string expression of the body (HumanEval/115 puts an
    import before it)."""
    for d in fn.body[:2]:
        value = d.value if isinstance(d, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return d  # type: ignore[return-value]
    return None


def query_of(problem: dict[str, Any]) -> str:
    """The docstring prose of the problem's entry point (the code-search query)."""
    fn = _entry(ast.parse(problem["prompt"]), problem["entry_point"])
    node = _doc_node(fn)
    if node is None:
        raise ConfigError(f"code search: {problem.get('task_id')} has no docstring to query with")
    doc = inspect.cleandoc(node.value.value)  # type: ignore[attr-defined]
    prose = []
    for line in doc.splitlines():
        if _EXAMPLE.search(line):
            break
        prose.append(line)
    text = " ".join(" ".join(prose).split())
    return text or " ".join(doc.split())


def strip_docstring(code: str, entry: str) -> str:
    """``code`` without the docstring of function ``entry`` (its lines removed)."""
    fn = _entry(ast.parse(code), entry)
    node = _doc_node(fn)
    if node is None:
        return code
    lines = code.splitlines(keepends=True)
    del lines[node.lineno - 1 : node.end_lineno]
    return "".join(lines)


def full_problem(problem: dict[str, Any]) -> dict[str, Any]:
    """The problem with the canonical solution moved into ``prompt`` (the whole function)."""
    if not problem.get("canonical_solution"):
        raise ConfigError(f"code search: {problem.get('task_id')} has no canonical solution")
    return {**problem, "prompt": problem["prompt"] + problem["canonical_solution"]}


def function_of(problem: dict[str, Any]) -> str:
    """The whole function (prompt + canonical solution) without the entry point's docstring."""
    p = full_problem(problem)
    return strip_docstring(p["prompt"], p["entry_point"])


def split(
    problems: Sequence[dict[str, Any]], n_train: int = 100, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A fixed permutation of the problems (``seed``): the first ``n_train`` and the rest."""
    if not 0 < n_train < len(problems):
        raise ConfigError(f"code search: n_train {n_train} must be in 1..{len(problems) - 1}")
    g = torch.Generator().manual_seed(seed_from("code-search-split", seed))
    perm = torch.randperm(len(problems), generator=g).tolist()
    return [problems[i] for i in perm[:n_train]], [problems[i] for i in perm[n_train:]]


def problem_ids(problems: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Stable integer ids: the number in ``HumanEval/<n>`` (else the position)."""
    out = []
    for i, p in enumerate(problems):
        m = re.search(r"(\d+)$", str(p.get("task_id", "")))
        out.append(int(m.group(1)) if m else i)
    return torch.tensor(out, dtype=torch.long)


def transformed(
    problems: Sequence[dict[str, Any]],
    operator: str | Sequence[str],
    variant: int,
    seed: int | str = 0,
) -> list[dict[str, Any]]:
    """The whole-function problems after ``operator``'s ``variant`` (a list of operators: applied
    in turn, e.g. three variable renamings, dead code and a function renaming); per-problem random
    streams keyed by ``seed``, the step and the problem ids. An operator that does not apply
    leaves the function as it was (``skipped`` says why, for a single operator)."""
    from robustlab.core.registry import perturbations

    ops = [operator] if isinstance(operator, str) else list(operator)
    if not ops:
        raise ConfigError("code search: no code perturbation given")
    ids = problem_ids(problems)
    cur = [full_problem(p) for p in problems]
    for k, op in enumerate(ops):
        t = perturbations.create(op)
        if getattr(t, "modality", None) != "code":
            raise ConfigError(f"code search: {op!r} is not a code perturbation")
        rng = ExampleRNG.from_seed(seed if len(ops) == 1 else f"{seed}|{k}", ids)
        cur = t(cur, variant, rng)
        if k < len(ops) - 1:
            cur = [{key: v for key, v in q.items() if key != "skipped"} for q in cur]
    return cur


def transformed_functions(
    problems: Sequence[dict[str, Any]],
    operator: str | Sequence[str],
    variant: int,
    seed: int | str = 0,
) -> tuple[list[str], list[bool]]:
    """Transformed functions (docstrings removed) and whether each differs from the original."""
    out = transformed(problems, operator, variant, seed)
    texts = [strip_docstring(q["prompt"], q["entry_point"]) for q in out]
    orig = [function_of(p) for p in problems]
    return texts, [t != o for t, o in zip(texts, orig, strict=True)]


def clone_auroc(encoder: Any, originals: Sequence[str], variants: Sequence[str]) -> float:
    """AUROC of cosine similarity separating clone pairs (``originals[i]``, ``variants[i]``) from
    non-clone pairs (``originals[i]``, ``variants[j]``, j != i); ``encoder.encode`` gives
    embeddings (``doc_matrix`` where the encoder caches documents, as
    :class:`~robustlab.models.rankers.dense.DenseRanker` does)."""
    from robustlab.metrics.detection import auroc

    if len(originals) != len(variants) or len(originals) < 2:
        raise ConfigError("clone detection needs >= 2 (original, variant) pairs of equal count")
    enc = getattr(encoder, "doc_matrix", None) or encoder.encode  # cached document embeddings
    a = torch.nn.functional.normalize(enc(list(originals)), dim=-1)
    b = torch.nn.functional.normalize(enc(list(variants)), dim=-1)
    sim = (a @ b.T).double()
    pos = torch.eye(len(a), dtype=torch.bool)
    return float(auroc(sim.flatten().numpy(), pos.flatten().numpy()))
