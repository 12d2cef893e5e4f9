"""Generation: text in, text out, scored against references (exact match or containment)."""

from __future__ import annotations

import re
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import tasks
from robustlab.data.base import Dataset
from robustlab.tasks.base import Evaluation, isolate, merge_list


def normalize_answer(s: str) -> str:
    """Lower-case, strip punctuation, articles and extra whitespace (SQuAD-style)."""
    s = re.sub(r"[^\w\s]", " ", s.lower())
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


@tasks.register("generation")
class GenerationTask:
    """Score generations: ``exact`` (normalized exact match) or ``contains`` (reference in output).

    A reference may be a string or a list of acceptable strings.
    """

    def __init__(self, match: str = "exact") -> None:
        self.match = match

    def _score(self, out: str, ref: Any) -> float:
        refs = ref if isinstance(ref, list | tuple) else [ref]
        o = normalize_answer(out)
        if self.match == "exact":
            return float(any(o == normalize_answer(str(r)) for r in refs))
        if self.match == "contains":
            return float(any(normalize_answer(str(r)) in o for r in refs))
        raise ConfigError(f"generation match must be 'exact' or 'contains', got {self.match!r}")

    def evaluate(self, model: Any, x: list[str], y: list[Any]) -> Evaluation:
        """Generate and score; adapters that account tokens (``last_usage``) add per-example
        extras ``prompt_tokens``, ``completion_tokens`` and ``cost`` (the same on a cached rerun)."""
        usage: dict[int, dict[str, Any]] = {}

        def gen(pos: list[int]) -> list[str]:
            out = model.generate([x[i] for i in pos])
            if len(out) != len(pos):
                raise ModelOutputError(
                    f"generator returned {len(out)} outputs for {len(pos)} prompts"
                )
            last = getattr(model, "last_usage", None)
            if isinstance(last, list) and len(last) == len(pos):
                usage.update(zip(pos, last, strict=True))
            return out

        chunks, errs = isolate(gen, len(x))
        preds = merge_list(chunks, len(x))
        correct = torch.tensor(
            [self._score(p, y[i]) if p is not None else float("nan") for i, p in enumerate(preds)]
        )
        extra = {
            k: [usage.get(i, {}).get(k) for i in range(len(x))]
            for k in ("prompt_tokens", "completion_tokens", "cost")
        }
        return Evaluation(
            preds, correct, [errs.get(i) for i in range(len(x))], extra if usage else {}
        )

    def perturb(self, perturbation: Any, x: list[str], level: float, rng: Any) -> list[str]:
        return perturbation(x, level, rng)

    def check(self, model: Any, data: Dataset) -> None:
        if not isinstance(data.x, list) or not all(isinstance(p, str) for p in data.x):
            raise ConfigError(f"generation needs a list of prompt strings ({data.name})")
        if not hasattr(model, "generate"):
            raise ConfigError(f"generation needs a generator adapter, got {type(model).__name__}")
        if hasattr(model, "ping"):  # a server that is down stops the run before anything is stored
            model.ping()
