"""Generation: text in, text out, scored against references (exact match, containment or the
final integer answer)."""

from __future__ import annotations

import re
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import tasks
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset
from robustlab.tasks.base import Evaluation, isolate, merge_list


def normalize_answer(s: str) -> str:
    """Lower-case, strip punctuation, articles and extra whitespace (SQuAD-style)."""
    s = re.sub(r"[^\w\s]", " ", s.lower())
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


_ANSWER = re.compile(r"\banswer\b", re.IGNORECASE)
_INT = re.compile(r"(?<!\d)-?\d+")  # a minus right after a digit is subtraction


def final_integer(text: str) -> int | None:
    """The integer a generation answers with: where the word ``answer`` occurs, the first integer
    after its first occurrence (``"...; answer 8"``, ``"Answer: -3"``, ``"the answer is 12"``;
    None for a completion cut off at ``"answer "``), else the last integer of the text; None
    when there is none. A minus right after a digit is subtraction (``"7-3"`` reads 3); digit
    groups are not joined (``"1,000"`` reads 0).

    Example::

        final_integer("0+3=3, 3+1=4; answer 4")   # 4
        final_integer("so the result is 12.")     # 12
        final_integer("0+3=3, 3+1=4; answer")     # None
    """
    m = _ANSWER.search(text)
    if m is not None:
        after = _INT.search(text, m.end())
        return int(after.group(0)) if after else None
    ints = _INT.findall(text)
    return int(ints[-1]) if ints else None


@tasks.register("generation")
class GenerationTask:
    """Score generations: ``exact`` (normalized exact match), ``contains`` (reference in output)
    or ``integer`` (the output's :func:`final_integer` equals the reference's integer).

    A reference may be a string or a list of acceptable strings. ``max_tokens`` and ``stop`` are
    passed to the generator when set (otherwise its own defaults apply).
    """

    def __init__(
        self,
        match: str = "exact",
        max_tokens: PositiveInt | None = None,
        stop: list[str] | None = None,
    ) -> None:
        self.match = match
        self.max_tokens = max_tokens
        self.stop = stop

    def _score(self, out: str, ref: Any) -> float:
        refs = ref if isinstance(ref, list | tuple) else [ref]
        o = normalize_answer(out)
        if self.match == "exact":
            return float(any(o == normalize_answer(str(r)) for r in refs))
        if self.match == "contains":
            return float(any(normalize_answer(str(r)) in o for r in refs))
        if self.match == "integer":
            got = final_integer(out)
            return float(got is not None and any(got == final_integer(str(r)) for r in refs))
        raise ConfigError(
            f"generation match must be 'exact', 'contains' or 'integer', got {self.match!r}"
        )

    def evaluate(self, model: Any, x: list[str], y: list[Any]) -> Evaluation:
        """Generate and score; adapters that account tokens (``last_usage``) add per-example
        extras ``prompt_tokens``, ``completion_tokens`` and ``cost`` (the same on a cached rerun)."""
        usage: dict[int, dict[str, Any]] = {}
        kw: dict[str, Any] = {}
        if self.max_tokens is not None:
            kw["max_tokens"] = self.max_tokens
        if self.stop is not None:
            kw["stop"] = list(self.stop)

        def gen(pos: list[int]) -> list[str]:
            out = model.generate([x[i] for i in pos], **kw)
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
