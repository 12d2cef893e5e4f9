"""Tasks: how a model's outputs on a batch become predictions, correctness and attack goals.

The runner is task-agnostic: a classifier, a generator and a ranker differ only in their task.
A task evaluates a batch robustly -- if the model raises, the batch is bisected until the failing
examples are isolated, and only those get an error record; the rest of the batch is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from robustlab.core.rng import ExampleRNG


@dataclass
class Evaluation:
    """Per-example outcome of evaluating a model on a batch."""

    pred: list[Any]
    correct: torch.Tensor  # float [B], NaN where ``error`` is set
    error: list[str | None]
    extra: dict[str, list[Any]] = field(default_factory=dict)
    # classification: the logit margin ``z_y - max_{j != y} z_j`` per example (float64, NaN where
    # the model failed); not a record column by itself: attack records carry it (``margin``,
    # ``clean_margin``), so clean and perturbation records stay as they were
    margin: torch.Tensor | None = None


class Task(Protocol):
    """Turns model outputs into records; knows what an attack must achieve."""

    def evaluate(self, model: Any, x: Any, y: Any) -> Evaluation: ...

    def perturb(self, perturbation: Any, x: Any, level: float, rng: Any) -> Any: ...

    def attack(
        self, attack: Any, model: Any, data: Any, level: float, norm: str, rng: Any
    ) -> tuple[Evaluation, dict[str, list[Any]]]:
        """Run ``attack`` at budget ``level`` (epsilon, edit budget, ...) -> evaluation + extras.

        Extras should include ``success``, ``queries`` and ``clean_correct`` per example so the
        attack metrics apply; tasks without attacks need not define this method. A task with
        ``takes_clean = True`` also accepts ``clean=``: ``evaluate(model, data.x, data.y)``,
        which the runner computes once per shard and shares between units.
        """
        ...

    def check(self, model: Any, data: Any) -> None:
        """Raise a clear error if ``model`` cannot serve ``data`` (shapes, classes, domain)."""
        ...


def take(x: Any, idx: Sequence[int]) -> Any:
    """Index a tensor or a list by positions (a ``range`` is a cheap slice)."""
    if isinstance(idx, range) and idx.step == 1:
        return x[idx.start : idx.stop]
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(list(idx), dtype=torch.long, device=x.device)]
    return [x[i] for i in idx]


def take_rng(rng: ExampleRNG, idx: Sequence[int]) -> ExampleRNG:
    """The streams of positions ``idx`` (a ``range`` covering every example is ``rng`` itself)."""
    if isinstance(idx, range) and idx.start == 0 and idx.step == 1 and len(idx) == len(rng):
        return rng
    return rng.take(torch.as_tensor(list(idx), dtype=torch.long))


def isolate(
    fn: Callable[[list[int]], Any], n: int
) -> tuple[list[tuple[list[int], Any]], dict[int, str]]:
    """Call ``fn`` on all positions; on an exception, bisect to find the examples that fail.

    ``fn(positions)`` returns the output for those positions (a batch). Returns the successful
    ``(positions, output)`` chunks and the error messages keyed by position. When nothing fails this
    is one call and one chunk covering ``range(n)``.
    """
    chunks: list[tuple[list[int], Any]] = []
    errors: dict[int, str] = {}

    def run(pos: list[int]) -> None:
        try:
            chunks.append((pos, fn(pos)))
        except Exception as e:  # noqa: BLE001 - any model failure becomes a per-example record
            if len(pos) == 1:
                errors[pos[0]] = f"{type(e).__name__}: {e}"[:500]
                return
            mid = len(pos) // 2
            run(pos[:mid])
            run(pos[mid:])

    if n:
        run(range(n))  # type: ignore[arg-type]  # ranges bisect into ranges: cheap slices
    return chunks, errors


def merge_rows(
    chunks: list[tuple[list[int], torch.Tensor]], n: int, fill: torch.Tensor
) -> torch.Tensor:
    """Assemble per-chunk batches into ``n`` rows; rows of failed positions come from ``fill``."""
    if len(chunks) == 1 and len(chunks[0][0]) == n:
        return chunks[0][1]
    out = fill.clone()
    for pos, rows in chunks:
        out[torch.as_tensor(list(pos), device=out.device)] = rows.to(out.device, out.dtype)
    return out


def merge_list(chunks: list[tuple[list[int], Any]], n: int) -> list[Any]:
    """Assemble per-chunk lists into ``n`` entries (None at failed positions)."""
    out: list[Any] = [None] * n
    for pos, vals in chunks:
        for p, v in zip(pos, vals, strict=True):
            out[p] = v
    return out


def merge_attack_results(
    chunks: list[tuple[list[int], Any]], x: Sequence[Any], n: int
) -> tuple[list[Any], dict[str, list[Any]]]:
    """Assemble per-chunk attack results of list inputs (texts, QA or ranking examples).

    Each chunk's result has ``x_adv`` (list), ``success``/``queries`` (tensors) and ``extra``
    (columns). Returns the adversarial inputs (the input itself where the attack failed) and the
    columns ``success``, ``queries`` (NaN where it failed) plus every extra column (None there).
    """
    x_adv = list(x)
    cols: dict[str, list[Any]] = {"success": [float("nan")] * n, "queries": [float("nan")] * n}
    for pos, r in chunks:
        got = {"success": r.success.float().tolist(), "queries": r.queries.float().tolist()}
        for k, vals in {"x_adv": r.x_adv, **got, **r.extra}.items():
            dst = x_adv if k == "x_adv" else cols.setdefault(k, [None] * n)
            for p, v in zip(pos, vals, strict=True):
                dst[p] = v
    return x_adv, cols
