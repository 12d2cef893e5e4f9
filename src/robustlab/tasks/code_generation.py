"""Code generation (HumanEval / ReCode, S2): complete a prompt, run it against the tests, sandboxed.

Examples are problem dicts (``Dataset.x``: ``prompt``, ``entry_point``, ``task_id``; ``Dataset.y``:
``test``, ``entry_point``); perturbations take and return such dicts, so a renamed entry point
travels with the prompt and is mapped into the tests. ``evaluate`` draws ``n`` completions per
prompt, runs ``prompt + completion + tests`` in :mod:`robustlab.code.sandbox`, and records
``correct`` = fraction of samples that pass (0/1 when greedy), with ``extra``: ``n``, ``passes``,
``pass_mask`` (one ``0``/``1`` per sample in generation order: ReCode's robust metrics pair sample
``i`` across the nominal prompt and its variants), ``status`` / ``message`` of the first sample, the transformation's ``family`` and ``skipped`` note.
``style="instruct"`` (for chat models) asks for the whole function in a code block and runs the
prompt followed by that block instead of a raw continuation.

Example::

    task = tasks.create("code-generation", {"max_tokens": 256})
    ev = task.evaluate(generator, data.x, data.y)
"""

from __future__ import annotations

import re
from typing import Any

import torch

from robustlab.code.problems import check_program
from robustlab.code.sandbox import Limits, Sandbox
from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import tasks
from robustlab.core.types import NonNegative, Positive, PositiveInt
from robustlab.data.base import Dataset
from robustlab.tasks.base import Evaluation, isolate, merge_list

STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "```"]


INSTRUCT = (
    "Complete the following Python function. Reply with the whole function in one ```python code"
    " block.\n```python\n{prompt}```"
)


def extract_code(reply: str) -> str:
    """The first fenced code block of an instruction-following reply (else the reply itself)."""
    m = re.search(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", reply, re.S)
    return m.group(1) if m else reply


def truncate(completion: str, stop: list[str]) -> str:
    """Cut a completion at the first stop sequence (HumanEval's post-processing)."""
    cut = min((i for s in stop if (i := completion.find(s)) >= 0), default=len(completion))
    return completion[:cut]


@tasks.register("code-generation")
class CodeGenerationTask:
    """Functional correctness of generated code: pass/fail per sample, executed in the sandbox."""

    def __init__(
        self,
        n: PositiveInt = 1,
        temperature: NonNegative = 0.0,
        max_tokens: PositiveInt = 300,
        timeout: Positive = 5.0,
        workers: int | None = None,
        style: str = "complete",
    ) -> None:
        self.style = style
        self.n = n
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.workers = workers

    def _generate(self, model: Any, prompts: list[str]) -> tuple[list[Any], dict[int, str]]:
        if self.n < 1:
            raise ConfigError(f"code-generation n must be >= 1, got {self.n}")
        if self.style not in ("complete", "instruct"):
            raise ConfigError(
                f"code-generation style must be complete or instruct, got {self.style!r}"
            )
        if self.style == "instruct":
            prompts = [INSTRUCT.format(prompt=p) for p in prompts]
        stop = STOP if self.style == "complete" else []

        def gen(pos: list[int]) -> list[str]:
            batch = [prompts[i] for i in pos for _ in range(self.n)]
            kw = {"max_tokens": self.max_tokens, "temperature": self.temperature, "stop": stop}
            out = model.generate(batch, **kw)
            if len(out) != len(batch):
                raise ModelOutputError(f"generator returned {len(out)} outputs for {len(batch)}")
            return [out[j * self.n : (j + 1) * self.n] for j in range(len(pos))]

        chunks, errs = isolate(gen, len(prompts))
        return merge_list(chunks, len(prompts)), errs

    def evaluate(self, model: Any, x: list[dict[str, Any]], y: list[dict[str, Any]]) -> Evaluation:
        samples, errs = self._generate(model, [p["prompt"] for p in x])
        jobs, where = [], []
        for i, (p, t, outs) in enumerate(zip(x, y, samples, strict=True)):
            for s in outs or []:
                prob = {**t, "prompt": p["prompt"]}
                jobs.append(check_program(prob, self._completion(str(s)), p.get("entry_point")))
                where.append(i)
        with Sandbox(self.workers) as sb:
            res = sb.run(jobs, Limits(timeout=self.timeout))
        passes = [0] * len(x)
        masks: list[str] = [""] * len(x)  # per-sample outcome in generation order ("1" = passed)
        first: list[Any] = [None] * len(x)
        for i, r in zip(where, res, strict=True):
            passes[i] += int(r.passed)
            masks[i] += "1" if r.passed else "0"
            if first[i] is None:
                first[i] = r
        err = [errs.get(i) for i in range(len(x))]
        correct, status, message, preds = [], [], [], []
        for i, outs in enumerate(samples):
            if outs is None:
                correct.append(float("nan"))
                status.append("error")
                message.append(err[i])
                preds.append(None)
                continue
            empty = not any(str(s).strip() for s in outs)
            correct.append(passes[i] / self.n)
            status.append("empty completion" if empty else first[i].status)
            message.append("generator returned nothing" if empty else first[i].message)
            preds.append(self._completion(str(outs[0])))
        extra = {
            "n": [self.n] * len(x),
            "passes": passes,
            "pass_mask": [m or None for m in masks],
            "status": status,
            "message": message,
            "family": [p.get("family", "nominal") for p in x],
            "entry_point": [p.get("entry_point") for p in x],
            "skipped": [p.get("skipped") for p in x],
        }
        return Evaluation(preds, torch.tensor(correct, dtype=torch.float32), err, extra)

    def _completion(self, out: str) -> str:
        """Text appended to the prompt: the truncated continuation, or (instruct) the reply's
        code block on its own lines -- it redefines the function after the prompt's stub."""
        return truncate(out, STOP) if self.style == "complete" else "\n" + extract_code(out)

    def perturb(self, perturbation: Any, x: list[dict[str, Any]], level: float, rng: Any) -> list:
        out = perturbation(x, level, rng)
        family = getattr(perturbation, "family", "other")
        return [{**p, "family": family} for p in out]

    def check(self, model: Any, data: Dataset) -> None:
        ok = isinstance(data.x, list) and all(
            isinstance(p, dict) and "prompt" in p and "entry_point" in p for p in data.x
        )
        if not ok:
            raise ConfigError(
                f"code-generation needs problem dicts with prompt and entry_point ({data.name})"
            )
        bad = [i for i, t in enumerate(data.y) if not isinstance(t, dict) or "test" not in t]
        if bad:
            raise ConfigError(f"code-generation: example {bad[0]} of {data.name} has no tests")
        if not hasattr(model, "generate"):
            raise ConfigError(
                f"code-generation needs a generator adapter, got {type(model).__name__}"
            )
        if hasattr(model, "ping"):  # a server that is down stops the run before anything is stored
            model.ping()
