"""FailSafeQA judges and scores (Kamble et al., 2025, "Expect the Unexpected: FailSafe Long Context QA").

A judge rates each answer 1-6. For an *answerable* example (clean, query failures, OCR-degraded
context) 6 is a correct answer, 4+ counts as compliant; for an *unanswerable* one (irrelevant or
missing context) 6 is a refusal ("not in the context") and an answer is a fabrication (1).
Judges: :class:`RuleJudge` (deterministic: containment of the reference, refusal phrases of
:data:`REFUSAL`) and :class:`LLMJudge` (any generator adapter -- the local SmolLM2, an HTTP LLM --
prompted with the rubric; unparseable ratings fall back to the rule judge and are counted).

Scores over the records of a run (:func:`failsafe_scores`, one row per model):

* **Robustness** R: share of examples whose answers are compliant (rating >= 4) in the baseline
  *and* every answerable perturbation (query misspelled/incomplete/out-of-domain, OCR context);
* **Context Grounding** G: share of examples on which the model refuses under *every* context
  failure (irrelevant, missing);
* **Compliance** LLMC_beta = (1 + b^2) R G / (b^2 R + G), the paper's F-beta trade-off (b < 1
  weighs grounding more; default 0.5).

Registered per-group metrics: ``answer_compliance`` (share rated >= 4 among answerable rows),
``context_grounding`` (share rated >= 4 among unanswerable rows), ``refusal_rate``.

Example::

    RuleJudge().rate(["q ___"], ["2%"], ["It rose 2%."], [True])   # [6]
    failsafe_scores(store.records(run_id))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric

REFUSAL = re.compile(
    r"\b(unknown|not (?:mentioned|stated|specified|provided|given|clear|available|say|said)|"
    r"no (?:information|answer|mention|context|passages?)|cannot|can't|don't know|do not know|"
    r"unable|n/a|does not (?:say|mention|contain|state))\b",
    re.I,
)


def normalize(s: str) -> str:
    """SQuAD-style normalisation with digit groups joined (``56,000`` -> ``56000``)."""
    from robustlab.tasks.generation import normalize_answer

    return normalize_answer(re.sub(r"(?<=\d),(?=\d)", "", str(s)))


def contains(answer: str, ref: Any) -> bool:
    """The normalised reference occurs in the normalised answer as whole tokens."""
    refs = ref if isinstance(ref, list | tuple) else [ref]
    a = f" {normalize(answer)} "
    return any(normalize(r) and f" {normalize(r)} " in a for r in refs)


def refused(answer: str) -> bool:
    return bool(REFUSAL.search(answer)) or not answer.strip()


class RuleJudge:
    """Deterministic 1-6 rating from containment of the reference and refusal phrases."""

    def rate(self, questions: Sequence[str], refs: Sequence[Any], answers: Sequence[str],
             answerable: Sequence[bool]) -> list[int]:  # fmt: skip
        out = []
        for ref, a, ok in zip(refs, answers, answerable, strict=True):
            hit, no = contains(a, ref), refused(a)
            if ok:
                out.append(6 if hit else 2 if no else 1)
            else:
                out.append(6 if no and not hit else 3 if hit else 1)
        return out


RUBRIC = (
    "Grade an AI answer from 1 (bad) to 6 (excellent).\n{case}\nQuestion: {q}\n"
    "Reference answer: {ref}\nAI answer: {a}\nReply with one digit.\nGrade:"
)
CASES = {
    True: "The AI had the document with the answer: 6 = it gives the reference answer, "
    "1 = wrong or no answer.",
    False: "The AI had NO document with the answer: 6 = it says it cannot answer, "
    "1 = it makes up an answer.",
}


class LLMJudge:
    """Rates with a generator prompted by :data:`RUBRIC`; falls back to :class:`RuleJudge`."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.fallbacks = 0

    def rate(self, questions: Sequence[str], refs: Sequence[Any], answers: Sequence[str],
             answerable: Sequence[bool]) -> list[int]:  # fmt: skip
        prompts = [RUBRIC.format(case=CASES[bool(ok)], q=q, ref=r, a=a or "(empty)")
                   for q, r, a, ok in zip(questions, refs, answers, answerable, strict=True)]  # fmt: skip
        outs = self.generator.generate(prompts, max_tokens=3, stop=["\n"])
        rule = RuleJudge().rate(questions, refs, answers, answerable)
        ratings = []
        for o, fallback in zip(outs, rule, strict=True):
            m = re.search(r"[1-6]", o)
            self.fallbacks += m is None
            ratings.append(int(m.group()) if m else fallback)
        return ratings


def _rows(df: pd.DataFrame, answerable: bool) -> np.ndarray:
    if "x.rating" not in df or "x.answerable" not in df:
        return np.zeros(0)
    keep = df["x.answerable"].astype(float) == float(answerable)
    return (df.loc[keep, "x.rating"].astype(float) >= 4).to_numpy(dtype=np.float64)


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if len(v) else float("nan")


for _name, _ans, _doc in (
    ("answer_compliance", True, "Share of answerable QA examples rated >= 4 (FailSafeQA)."),
    ("context_grounding", False, "Share of unanswerable QA examples refused (rating >= 4)."),
):
    metrics.register(_name)(
        Metric(
            _name,
            lambda df, a=_ans: _mean(_rows(df, a)),
            True,
            per_example=lambda df, a=_ans: _rows(df, a),
            doc=_doc,
        )  # fmt: skip
    )

metrics.register("refusal_rate")(
    Metric(
        "refusal_rate",
        lambda df: (
            _mean(df["x.refused"].astype(float).to_numpy()) if "x.refused" in df else float("nan")
        ),
        higher_is_better=False,
        doc="Share of answers that refuse (say the context does not tell).",
    )  # fmt: skip
)


def compliance(r: float, g: float, beta: float = 0.5) -> float:
    """LLMC_beta = (1 + beta^2) R G / (beta^2 R + G) (0 when both are 0)."""
    den = beta**2 * r + g
    return float((1 + beta**2) * r * g / den) if den > 0 else 0.0


def failsafe_scores(df: pd.DataFrame, beta: float = 0.5) -> pd.DataFrame:
    """Robustness, Context Grounding and Compliance per model over a run's clean and perturbation
    records (``frame`` layout; attack records are left out)."""
    rows = []
    df = df[df["kind"].isin(["clean", "perturbation"])] if "x.rating" in df else df.iloc[:0]
    for model, g in df[df["x.rating"].notna()].groupby("model") if len(df) else []:
        ok = (g["x.rating"].astype(float) >= 4).astype(float)
        ans = g["x.answerable"].astype(float) == 1
        per_r = ok[ans].groupby(g.loc[ans, "example_id"]).min()
        per_g = ok[~ans].groupby(g.loc[~ans, "example_id"]).min()
        r = float(per_r.mean()) if len(per_r) else float("nan")
        gr = float(per_g.mean()) if len(per_g) else float("nan")
        rows.append({"model": model, "robustness": r, "context_grounding": gr,
                     "compliance": compliance(r, gr, beta) if r == r and gr == gr else np.nan,
                     "n_examples": int(g["example_id"].nunique())})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "robustness", "context_grounding", "compliance",
                                       "n_examples"])  # fmt: skip
