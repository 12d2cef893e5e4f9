"""Code search on HumanEval (docstring -> function) for the ranking task, and its training pairs.

Built by :mod:`robustlab.code.search` (construction, split and transformations documented
there): 164 problems, a fixed split into ``n_train`` training and ``164 - n_train`` test
problems (default 100 / 64).

- ``humaneval-code-search``: ranking examples ``{"query": docstring prose, "docs": the split's
  functions}`` (one shared list: every query ranks all functions of its split; exactly one is
  relevant). ``transform`` applies a code perturbation to every *document* (``code_var_rename``,
  ``code_dead_code``, ``code_statement_swap``, ...; a list: applied in turn; variant
  ``variant``): retrieval of
  transformed code by the same queries. Metadata: ``task_id``, ``changed`` (whether the
  operator applied to the query's function).
- ``humaneval-pairs``: the training pairs of the ``contrabert`` trainer as a tensor dataset
  (``x`` = positions 0..N-1, ``y`` = 0: the positive is candidate 0) whose metadata holds the
  problems (``problem``), queries (``query``) and functions (``function``).

Example::

    data = datasets.create("humaneval-code-search", {"split": "test", "transform": "code_dead_code"})
    RankingTask(k=10).evaluate(models.create("minilm"), data.x, data.y)
"""

from __future__ import annotations

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import PositiveInt, Seed
from robustlab.data.base import Dataset
from robustlab.data.ranking import build_examples


def _problems(split: str, n_train: int, seed: int) -> list[dict]:
    from robustlab.code.problems import load_humaneval
    from robustlab.code.search import split as split_problems

    if split not in ("train", "test", "all"):
        raise ConfigError(f"humaneval code search: split must be train, test or all, got {split!r}")
    probs = load_humaneval()
    if split == "all":
        return probs
    train, test = split_problems(probs, n_train, seed)
    return train if split == "train" else test


@datasets.register("humaneval-code-search")
def humaneval_code_search(
    split: str = "test",
    transform: str | list[str] | None = None,
    variant: PositiveInt = 1,
    n_train: PositiveInt = 100,
    seed: Seed = 0,
) -> Dataset:
    """HumanEval code search: docstring prose -> its function among the split's functions."""
    from robustlab.code.search import function_of, problem_ids, query_of, transformed_functions

    probs = _problems(split, int(n_train), seed)
    if transform is None:
        docs, changed = [function_of(p) for p in probs], [False] * len(probs)
    else:
        docs, changed = transformed_functions(probs, transform, int(variant), seed)
    keys = [p["task_id"] for p in probs]
    return build_examples(
        {k: query_of(p) for k, p in zip(keys, probs, strict=True)},
        {k: {k: 1.0} for k in keys},
        keys, docs,
        name=f"humaneval-code-search-{split}" + (f"-{_tag(transform)}-{variant}" if transform else ""),
        ids=problem_ids(probs).tolist(),
        meta={"task_id": keys, "changed": changed},
    )  # fmt: skip


def _tag(transform: str | list[str]) -> str:
    return transform if isinstance(transform, str) else "+".join(transform)


@datasets.register("humaneval-pairs")
def humaneval_pairs(split: str = "train", n_train: PositiveInt = 100, seed: Seed = 0) -> Dataset:
    """(docstring prose, function) training pairs of HumanEval's ``split`` for ``contrabert``."""
    from robustlab.code.search import function_of, problem_ids, query_of

    probs = _problems(split, int(n_train), seed)
    n = len(probs)
    return Dataset(
        torch.arange(n),
        torch.zeros(n, dtype=torch.long),
        f"humaneval-pairs-{split}",
        ids=problem_ids(probs),
        meta={
            "problem": [dict(p) for p in probs],
            "query": [query_of(p) for p in probs],
            "function": [function_of(p) for p in probs],
        },
    )
