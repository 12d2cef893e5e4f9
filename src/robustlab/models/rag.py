"""Retrieval-augmented generation: a ranker retrieves top-k passages, a reader answers from them.

``RAGPipeline(retriever, reader, ids, texts, k)`` answers QA examples ``{"question", "doc_id",
"context"}``: the example's ``context`` stands for its gold document in the corpus (a perturbed or
attacked document replaces it there, ``""`` removes it), the retriever ranks the whole corpus for the
question (any ranker of :mod:`robustlab.models.rankers`; scores of a corpus with one replaced
document are computed exactly on that edited list), and the reader answers from the top-k passages:
``reader.read(questions, passages)`` when it has it (``cloze-reader``, :mod:`robustlab.models.rag_reader`),
otherwise ``reader.generate(prompts)`` with :data:`TEMPLATE` (any generator adapter: the local
SmolLM2 GGUF, whose completions are cached on disk, or an HTTP LLM). ``retriever=None`` is the
FailSafeQA long-context setting: the reader gets the example's context itself. ``generate(questions)``
makes the pipeline a plain generator (question in, answer out). ``calls`` counts pipeline calls.

Example::

    rag = models.create("rag", {"retriever": "bm25", "reader": "smollm2-135m", "k": 2})
    data = datasets.create("bbc-qa", {"n": 5})
    rag.answer(data.x), rag.retrieve([e["question"] for e in data.x])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from robustlab.core.errors import ConfigError, ModelOutputError
from robustlab.core.registry import models
from robustlab.core.types import Capabilities, PositiveInt
from robustlab.models.rankers import score_many

TEMPLATE = (  # one worked example: SmolLM2-135M answers 56% of 16 questions with it, 6% without
    "Fill in the blank ___ with the number from the passage, or say unknown.\n\n"
    "Passage: [1] Shares in the firm rose 4% to 120p after it said profits had doubled to £30m.\n"
    "Sentence: Shares in the firm rose ___ to 120p after it said profits had doubled.\n"
    "Answer: 4%\n\nPassage: {passages}\nSentence: {question}\nAnswer:"
)


class RAGPipeline:
    """Retriever + reader over a fixed passage corpus (black-box, batched, cached reader)."""

    def __init__(self, retriever: Any, reader: Any, ids: Sequence[str], texts: Sequence[str],
                 k: int = 2, template: str = TEMPLATE, max_tokens: int = 16) -> None:  # fmt: skip
        if k < 1:
            raise ConfigError(f"RAG k must be >= 1, got {k}")
        if len(ids) != len(texts) or len(set(ids)) != len(ids):
            raise ConfigError("RAG corpus needs unique ids, one per passage")
        if "{passages}" not in template or "{question}" not in template:
            raise ConfigError("RAG template needs {passages} and {question} fields")
        self.retriever, self.reader, self.k = retriever, reader, k
        self.ids, self.texts = list(ids), list(texts)
        self.pos = {d: i for i, d in enumerate(self.ids)}
        self.template, self.max_tokens = template, max_tokens
        self.capabilities = Capabilities(grad=False, batch=True, probs_only=True)
        self.calls = 0

    # retrieval ---------------------------------------------------------------------------------
    def scores(self, examples: Sequence[dict[str, Any]]) -> torch.Tensor:
        """``[B, N]`` retriever scores over the corpus, each example's gold document replaced by
        its ``context`` (``-inf`` where removed); one batched call per distinct corpus."""
        groups: dict[tuple[int, str], list[int]] = {}
        for i, e in enumerate(examples):
            p = self.pos.get(e.get("doc_id", ""), -1)
            same = p < 0 or e.get("context") is None or e["context"] == self.texts[p]
            groups.setdefault((-1, "") if same else (p, e["context"]), []).append(i)
        out = torch.empty(len(examples), len(self.texts), dtype=torch.float64)
        for (p, ctx), members in groups.items():
            docs = self.texts
            if p >= 0:
                docs = list(self.texts)
                docs[p] = ctx
                if hasattr(self.retriever, "prepare"):  # one-off variant: not cached on disk
                    self.retriever.prepare([ctx], persist=False)
            s = score_many(self.retriever, [examples[i]["question"] for i in members], docs)
            if s.shape != (len(members), len(docs)):
                raise ModelOutputError(f"retriever returned {tuple(s.shape)} scores")
            if p >= 0 and not ctx.strip():
                s[:, p] = float("-inf")
            out[members] = s.double()
        return out

    def forward(
        self, examples: Sequence[dict[str, Any]], refs: Sequence[Any] | None = None
    ) -> dict[str, list[Any]]:
        """One pipeline call per example: ``answer``, the gold passage's retriever ``gold_score``
        and whether it is among the top-k (``gold_in_topk``; NaN/None without a retriever); with
        ``refs`` and a reader that grades answers (``answer_scores``), also ``answer_score``."""
        n = len(examples)
        questions = [e["question"] for e in examples]
        if self.retriever is None:
            passages = self.passages(examples)
            out: dict[str, list[Any]] = {
                "gold_score": [float("nan")] * n,
                "gold_in_topk": [None] * n,
            }
        else:
            s = self.scores(examples)
            order = torch.sort(-s, dim=1, stable=True).indices[:, : self.k].tolist()
            gold = [self.pos.get(e.get("doc_id", ""), -1) for e in examples]
            passages = [[e["context"] if j == g and e.get("context") is not None else self.texts[j]
                         for j in top if s[i, j] > float("-inf")]
                        for i, (e, g, top) in enumerate(zip(examples, gold, order, strict=True))]  # fmt: skip
            out = {
                "gold_score": [float(s[i, g]) if g >= 0 else float("nan") for i, g in enumerate(gold)],
                "gold_in_topk": [g in top and bool(s[i, g] > float("-inf"))
                                 for i, (g, top) in enumerate(zip(gold, order, strict=True))],
            }  # fmt: skip
        out["answer"] = self.read(questions, passages)
        if refs is not None and hasattr(self.reader, "answer_scores"):
            out["answer_score"] = self.reader.answer_scores(questions, passages, list(refs))
        return out

    def retrieve(self, examples: Sequence[dict[str, Any]] | Sequence[str]) -> list[list[int]]:
        """Corpus positions of the top-k passages per example (ties: lower position first)."""
        ex = [{"question": e} if isinstance(e, str) else e for e in examples]
        s = self.scores(ex)
        order = torch.sort(-s, dim=1, stable=True).indices[:, : self.k]
        return [[j for j in row if s[i, j] > float("-inf")] for i, row in enumerate(order.tolist())]

    def passages(self, examples: Sequence[dict[str, Any]]) -> list[list[str]]:
        """The passages the reader sees: retrieved (gold replaced by the context) or the context."""
        if self.retriever is None:
            return [[e["context"]] if e.get("context", "").strip() else [] for e in examples]
        out = []
        for e, top in zip(examples, self.retrieve(examples), strict=True):
            p = self.pos.get(e.get("doc_id", ""), -1)
            out.append([e["context"] if j == p and e.get("context") is not None else self.texts[j]
                        for j in top])  # fmt: skip
        return out

    # reading -----------------------------------------------------------------------------------
    def prompt(self, question: str, passages: Sequence[str]) -> str:
        body = " ".join(f"[{j + 1}] {t}" for j, t in enumerate(passages)) or "(none)"
        return self.template.format(passages=body, question=question)

    def read(self, questions: Sequence[str], passages: Sequence[Sequence[str]]) -> list[str]:
        """The reader's answers (one reader call per question; generators are batched)."""
        self.calls += len(questions)
        if hasattr(self.reader, "read"):
            out = self.reader.read(list(questions), [list(p) for p in passages])
        else:
            prompts = [self.prompt(q, p) for q, p in zip(questions, passages, strict=True)]
            gen = self.reader.generate(prompts, max_tokens=self.max_tokens, stop=["\n\n"])
            out = [next((ln for ln in str(g).splitlines() if ln.strip()), "") for g in gen]
        if len(out) != len(questions):
            raise ModelOutputError(f"reader returned {len(out)} answers for {len(questions)}")
        return [str(o).strip() for o in out]

    def answer(self, examples: Sequence[dict[str, Any]]) -> list[str]:
        """Answers to QA examples ``{"question", "doc_id"?, "context"?}`` through the pipeline."""
        for e in examples:
            if not isinstance(e, dict) or not isinstance(e.get("question"), str):
                raise ConfigError("RAG examples are dicts with a 'question' string")
        return self.read([e["question"] for e in examples], self.passages(examples))

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        """Generator interface: each prompt is a question answered over the unchanged corpus."""
        if self.retriever is None:
            raise ConfigError("a RAG pipeline without retriever needs examples with a context")
        return self.answer([{"question": str(p)} for p in prompts])

    def fingerprint(self) -> str:
        parts = [getattr(m, "fingerprint", lambda: "none")() if m is not None else "none"
                 for m in (self.retriever, self.reader)]  # fmt: skip
        blob = "|".join([*parts, str(self.k), self.template, str(self.max_tokens), *self.ids])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@models.register("rag")
def rag(
    retriever: str | None = "bm25",
    reader: str = "smollm2-135m",
    k: PositiveInt = 2,
    corpus: str = "bbc-qa",
    n_docs: PositiveInt = 300,
    retriever_params: dict[str, Any] | None = None,
    reader_params: dict[str, Any] | None = None,
    max_tokens: PositiveInt = 16,
    template: str | None = None,
) -> RAGPipeline:
    """RAG pipeline: a registered ranker (``bm25``, ``minilm``; None = given context) retrieves
    top-k passages of the ``bbc-qa`` corpus, a registered generator reads them."""
    if corpus != "bbc-qa":
        raise ConfigError(f"rag corpus must be 'bbc-qa', got {corpus!r}")
    from robustlab.data.qa import qa_corpus

    ids, texts = qa_corpus(n_docs)
    ret = models.create(retriever, retriever_params or {}) if retriever else None
    return RAGPipeline(ret, models.create(reader, reader_params or {}), ids, texts, k,
                       template=template or TEMPLATE, max_tokens=max_tokens)  # fmt: skip
