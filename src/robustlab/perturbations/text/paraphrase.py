"""Paraphrase by a local instruction-tuned LLM (query shift for rankers, prompt shift for LLMs).

Threat model: a natural rewording of the whole text, not an edit budget. Severity 1 is the greedy
paraphrase; severity ``s >= 2`` samples at temperature 0.7 with seed ``s`` (distinct variants).
Every request is independent of the others in its batch and completions are cached on disk, so the
result for a text does not depend on its batch and a rerun costs no generation.

Example::

    p = perturbations.create("paraphrase")           # SmolLM2-135M-Instruct via llama.cpp
    p(["Ad sales boost Time Warner profit"], 1, rng)  # -> e.g. ["Time Warner profits rise on ads"]

Limits: a 135M-parameter model sometimes answers instead of rewording; outputs that are empty or
more than three times longer than the input fall back to the input text (recorded as unchanged).
"""

from __future__ import annotations

import re
from typing import Any

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import SEED_MAX, Levels, PositiveInt

PROMPT = (
    "Rewrite the following text with different words but exactly the same meaning. "
    "Reply with the rewritten text only.\nText: {text}"
)


@perturbations.register("paraphrase")
class Paraphrase:
    """LLM paraphrase of each text (severity 1 greedy; s >= 2 sampled variants), cached."""

    modality = "text"
    level_domain = Levels(0, SEED_MAX, integer=True, what="paraphrase variant")  # 1 greedy
    severities = (1, 2, 3)

    def __init__(self, model: str = "smollm2-135m", max_tokens: PositiveInt = 48) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self._gen: Any = None

    def _generator(self) -> Any:
        if self._gen is None:
            params = {"chat": True} if self.model in ("smollm2-135m", "gguf") else {}
            self._gen = models.create(self.model, params)
        return self._gen

    def __call__(self, x: list[str], severity: float, rng: ExampleRNG) -> list[str]:
        if not isinstance(x, list) or not all(isinstance(t, str) for t in x):
            raise ConfigError("paraphrase needs a list of strings")
        if severity == 0 or not x:
            return list(x)
        s = int(round(severity))
        if s < 1:
            raise ConfigError(f"paraphrase severity must be 0 or >= 1, got {severity}")
        out = self._generator().generate(
            [PROMPT.format(text=t) for t in x],
            max_tokens=self.max_tokens,
            temperature=0.0 if s == 1 else 0.7,
            seed=s,
        )
        return [_clean(o, t) for o, t in zip(out, x, strict=True)]


def _clean(out: str, original: str) -> str:
    line = next((ln.strip() for ln in out.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(rewritten( text)?|text|paraphrase)\s*:\s*", "", line, flags=re.I)
    line = line.strip().strip('"').strip("'").strip()
    if not line or len(line) > 3 * max(len(original), 10):
        return original
    return line
