"""RAG question answering: QA examples through a RAG pipeline, scored and judged (FailSafeQA).

Examples are dicts ``{"question", "doc_id", "context"}`` (:mod:`robustlab.data.qa`), labels the
reference answers; the model is a :class:`~robustlab.models.rag.RAGPipeline` (anything with
``answer(examples) -> list[str]``). ``correct`` is the reference's containment (``match="contains"``,
whole tokens, digit groups joined) or normalised exact match for answerable examples, and a refusal
for unanswerable ones (context irrelevant or missing: the desired behaviour is to refuse). Extras:
``rating`` (the judge's 1-6, :mod:`robustlab.metrics.failsafe`), ``answerable``, ``refused`` and
``gold_retrieved`` (the gold passage among the top-k). Perturbations apply to their ``field``
(``question`` by default, ``context`` for context failures); attacks (GARAG,
:mod:`robustlab.attacks.garag`) edit the gold document within ``level`` (word edit rate).

Example::

    task = RAGTask(match="contains", judge="rule")
    ev = task.evaluate(models.create("rag"), data.x, data.y)
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import models, tasks
from robustlab.data.base import Dataset
from robustlab.metrics.failsafe import LLMJudge, RuleJudge, contains, normalize, refused
from robustlab.tasks.base import (
    Evaluation,
    isolate,
    merge_attack_results,
    merge_list,
    take,
    take_rng,
)


@tasks.register("rag")
class RAGTask:
    """Per-example answer correctness (``contains``/``exact``) and FailSafeQA judge ratings.

    ``judge``: ``"rule"`` (deterministic) or ``"llm"`` with ``judge_model`` (a registered generator,
    e.g. ``smollm2-135m``) and ``judge_params``.
    """

    def __init__(self, match: str = "contains", judge: str = "rule", judge_model: str | None = None,
                 judge_params: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.match, self.judge, self.judge_model = match, judge, judge_model
        self.judge_params = judge_params or {}
        self._judge: Any = None

    def judge_obj(self) -> Any:
        if self._judge is None:
            if self.judge == "rule":
                self._judge = RuleJudge()
            elif self.judge == "llm":
                if not self.judge_model:
                    raise ConfigError("rag judge 'llm' needs judge_model (a registered generator)")
                self._judge = LLMJudge(models.create(self.judge_model, self.judge_params))
            else:
                raise ConfigError(f"rag judge must be 'rule' or 'llm', got {self.judge!r}")
        return self._judge

    def score(self, answer: str, ref: Any, answerable: bool) -> float:
        if not answerable:
            return float(refused(answer) and not contains(answer, ref))
        if self.match == "contains":
            return float(contains(answer, ref))
        if self.match == "exact":
            refs = ref if isinstance(ref, list | tuple) else [ref]
            return float(any(normalize(answer) == normalize(r) for r in refs))
        raise ConfigError(f"rag match must be 'contains' or 'exact', got {self.match!r}")

    def evaluate(self, model: Any, x: list[dict[str, Any]], y: list[Any]) -> Evaluation:
        def run(pos: list[int]) -> list[str]:
            out = model.answer(take(x, pos))
            if len(out) != len(pos):
                raise ModelOutputError(f"RAG model returned {len(out)} answers for {len(pos)}")
            return out

        chunks, errs = isolate(run, len(x))
        preds = merge_list(chunks, len(x))
        ans = [bool(e.get("answerable", True)) for e in x]
        ok = [i for i, p in enumerate(preds) if p is not None]
        ratings: list[Any] = [None] * len(x)
        if ok:
            r = self.judge_obj().rate([x[i]["question"] for i in ok], [y[i] for i in ok],
                                      [preds[i] for i in ok], [ans[i] for i in ok])  # fmt: skip
            for i, v in zip(ok, r, strict=True):
                ratings[i] = v
        gold = self.gold_retrieved(model, x)
        correct = torch.tensor([self.score(p, y[i], ans[i]) if p is not None else float("nan")
                                for i, p in enumerate(preds)], dtype=torch.float64)  # fmt: skip
        extra = {"rating": ratings, "answerable": [int(a) for a in ans],
                 "refused": [None if p is None else int(refused(p)) for p in preds],
                 "gold_retrieved": gold}  # fmt: skip
        return Evaluation(preds, correct, [errs.get(i) for i in range(len(x))], extra=extra)

    @staticmethod
    def gold_retrieved(model: Any, x: list[dict[str, Any]]) -> list[Any]:
        """1 if the (possibly edited) gold passage is among the top-k, None without a retriever."""
        if getattr(model, "retriever", None) is None or not hasattr(model, "retrieve"):
            return [None] * len(x)
        top = model.retrieve(x)
        return [
            int(model.pos.get(e.get("doc_id", ""), -1) in t) for e, t in zip(x, top, strict=True)
        ]

    def perturb(self, perturbation: Any, x: list[dict[str, Any]], level: float, rng: Any) -> Any:
        field = getattr(perturbation, "field", "question")
        old = [str(e.get(field) or "") for e in x]
        new = perturbation(old, level, rng)
        keep = getattr(perturbation, "answerable", True)
        return [{**e, field: n, "answerable": bool(e.get("answerable", True) and (keep or n == o))}
                for e, n, o in zip(x, new, old, strict=True)]  # fmt: skip

    def attack(self, attack: Any, model: Any, data: Dataset, level: float, norm: str,
               rng: Any) -> tuple[Evaluation, dict[str, list[Any]]]:  # fmt: skip
        """Attack with word edit rate ``level``; success = clean-correct and adversarially wrong."""
        from robustlab.attacks.text import word_edit_rate

        x, y, n = list(data.x), list(data.y), len(data)
        clean = self.evaluate(model, x, y)

        def run(pos: list[int]) -> Any:
            return attack(model, take(x, pos), take(y, pos), float(level), rng=take_rng(rng, pos))

        chunks, errs = isolate(run, n)
        x_adv, extra = merge_attack_results(chunks, x, n)
        queries = extra.pop("queries")
        del extra["success"]  # re-checked below on the returned examples
        adv = self.evaluate(model, x_adv, y)
        cc = clean.correct.tolist()
        ok = adv.correct.tolist()
        extra |= {
            "success": [None if i in errs or c != c else int(c == 1 and a == 0)
                        for i, (c, a) in enumerate(zip(cc, ok, strict=True))],
            "queries": queries, "clean_correct": [None if c != c else int(c) for c in cc],
            "edit_rate": word_edit_rate([e["context"] for e in x],
                                        [e["context"] for e in x_adv]).tolist(),
        }  # fmt: skip
        adv.error = [errs.get(i) or adv.error[i] for i in range(n)]
        return adv, extra

    def check(self, model: Any, data: Dataset) -> None:
        if not isinstance(data.x, list) or not all(
            isinstance(e, dict) and isinstance(e.get("question"), str) for e in data.x
        ):
            raise ConfigError(f"rag needs QA examples: dicts with a 'question' ({data.name})")
        if not hasattr(model, "answer"):
            raise ConfigError(
                f"rag needs a RAG pipeline (models 'rag'), got {type(model).__name__}"
            )
        pos = getattr(model, "pos", None)
        if getattr(model, "retriever", None) is not None and pos is not None:
            texts = model.texts
            missing = [e["doc_id"] for e in data.x if e.get("doc_id") and (
                e["doc_id"] not in pos or texts[pos[e["doc_id"]]] != e.get("context"))]  # fmt: skip
            if missing:
                raise ConfigError(
                    f"{len(missing)} gold passages of {data.name} (e.g. {missing[0]!r}) differ from "
                    "the RAG corpus: give the data and the rag model the same n_docs"
                )
