"""Ranking attacks (S1 tasks 4 and 5): perturb a query or a document within an edit budget.

Protocol (called by :meth:`robustlab.tasks.ranking.RankingTask.attack`)::

    attack(model, x, y, budget, *, k, rng) -> RankAttackResult

``x`` are ranking examples (``{"query", "docs", ...}``), ``y`` their relevance lists, ``budget`` the
number of word edits, ``k`` the cut-off that defines success. ``target`` says what is attacked:
``"query"`` (demote the relevant documents out of the top-k) or ``"document"`` (promote a
non-relevant document into the top-k; ``extra["target"]`` names its position). Success is
re-checked by the task on the returned examples. ``queries`` counts ranker calls (one call scores one
query against one document list, or one forward+backward pass for white-box attacks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RankAttackResult:
    """Adversarial examples, per-example success/queries, and extra per-example columns."""

    x_adv: list[dict[str, Any]]
    success: torch.Tensor  # bool [B]
    queries: torch.Tensor  # int64 [B]
    extra: dict[str, list[Any]] = field(default_factory=dict)


def words(text: str) -> list[str]:
    """Whitespace-separated words (attacks edit whole words)."""
    return text.split()
