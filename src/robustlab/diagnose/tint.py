"""Diagnosis ``tint``: how noise in few-shot chains of thought changes a generator's answers.

After Havrilla & Iyer, "Understanding the Effect of Noise in LLM Training Data with Algorithmic
Chains of Thought" (2024; seed S16), prompted setting. The suite's data must be the ``tint``
dataset (:mod:`robustlab.data.tint`); at probe level ``c`` the diagnosis loads the same examples
with ``noise`` (static or dynamic) at ``contamination = c`` (same lists, same queries, same noised
positions for both noise types), generates one completion per prompt and scores the final integer
against the query's clean answer (:func:`robustlab.tasks.generation.final_integer`, exact match).
One record per prompt (role ``test``); its metadata carries the function, noise type,
contamination and the number of noised steps; ``extra["answer"]`` is the parsed integer (None
when the completion has none). Level 0 is the clean prompt (identical text for both types, so a
generator's cache answers it once).

Suite::

    data: {name: tint, params: {n: 40, functions: [max, sum], length: 2, high: 5}}
    task: {name: generation, params: {match: integer, max_tokens: 32, stop: ["\\n"]}}
    probes:
      - {kind: diagnosis, name: tint, label: tint-static, params: {noise: static},
         levels: [0, 0.25, 0.5, 1]}
      - {kind: diagnosis, name: tint, label: tint-dynamic, params: {noise: dynamic},
         levels: [0, 0.25, 0.5, 1]}

The report section ``tint`` draws accuracy against contamination, one curve per noise type.
"""

from __future__ import annotations

from typing import Any, Literal

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.levels import Levels
from robustlab.core.registry import diagnoses
from robustlab.core.types import PositiveInt
from robustlab.data.base import Dataset
from robustlab.diagnose.base import DiagnosisEnv, Scored

CONTAMINATION = Levels(0, 1, what="contamination")


@diagnoses.register("tint", levels=CONTAMINATION)
class TIntNoise:
    """Noisy chains of thought (TInt): a generator's answer accuracy when ``level`` (the
    contamination) of its few-shot demonstrations' steps carry static or dynamic noise.

    ``intensity`` and ``unit`` default to the data's; ``max_tokens`` and ``stop`` are the
    generation settings, by default those of the suite's generation task (so that level 0 is the
    suite's clean evaluation, answered from the cache), else 48 tokens, stopping at the newline
    (one line per trace).
    """

    def __init__(
        self,
        noise: Literal["static", "dynamic"] = "static",
        intensity: PositiveInt | None = None,
        unit: Literal["step", "shot"] | None = None,
        max_tokens: PositiveInt | None = None,
        stop: list[str] | None = None,
    ) -> None:
        self.noise = noise
        self.intensity = intensity
        self.unit = unit
        self.max_tokens = max_tokens
        self.stop = stop

    def check_data(self, data: Dataset, others: dict[str, Dataset]) -> None:
        if data.name != "tint" or "noise" not in data.meta:
            raise ConfigError(
                f"diagnosis 'tint' needs the tint dataset (data: {{name: tint, params: ...}}), "
                f"got {data.name!r}"
            )

    def check_model(self, model: Any) -> None:
        if not hasattr(model, "generate"):
            raise CapabilityError(
                f"diagnosis 'tint' needs a text generator (generate(prompts)), got "
                f"{type(model).__name__}: use e.g. smollm2-135m, gguf or http-generator"
            )

    def noised(self, env: DiagnosisEnv, level: float) -> Dataset:
        """The unit's tint data with this probe's noise at contamination ``level``."""
        spec = env.unit.data
        if spec.name != "tint":
            raise ConfigError(f"diagnosis 'tint' needs the tint dataset, got {spec.name!r}")
        params = {**spec.params, "noise": self.noise, "contamination": float(level)}
        if self.intensity is not None:
            params["intensity"] = self.intensity
        if self.unit is not None:
            params["unit"] = self.unit
        return env.data({"name": "tint", "params": params})

    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]:
        from robustlab.tasks.generation import GenerationTask, final_integer

        CONTAMINATION.check([level], "diagnosis 'tint'")
        d = self.noised(env, level)
        assert d.ids is not None and data.ids is not None
        if len(d) != len(data) or not bool((d.ids == data.ids).all()) or d.y != data.y:
            raise ConfigError("diagnosis 'tint': the noised prompts do not match the suite's data")
        suite_task = env.ctx.task(env.unit.task)
        max_tokens = self.max_tokens or getattr(suite_task, "max_tokens", None) or 48
        stop = self.stop if self.stop is not None else getattr(suite_task, "stop", None)
        task = GenerationTask("integer", max_tokens, ["\n"] if stop is None else list(stop))
        ev = task.evaluate(model, d.x, d.y)
        answers = [None if p is None else final_integer(p) for p in ev.pred]
        return [Scored(d, ev.pred, ev.correct, {"answer": answers, **ev.extra}, error=ev.error)]
