"""Adversarial document attacks (S1 task 5): promote a non-relevant document into the top-k by
inserting at most ``budget`` words at its start.

* ``doc-attack`` (black-box, any ranker; scores only): greedy word insertion in the style of
  PRADA / keyword stuffing (Wu et al., 2023): candidate words are the query's words and the words
  opening the top-ranked document; each step scores every candidate insertion (one ranker call
  each, with the target replaced in the candidate list) and keeps the one that ranks the target
  highest.
* ``hotflip-doc`` (white-box, bi-encoders with :meth:`embed`): HotFlip (Ebrahimi et al., 2018)
  trigger search: ``budget`` trigger words are prepended and flipped, one position per step, to the
  vocabulary word with the largest first-order gain in query-document similarity
  ``(e_v - e_cur) . grad``; the ``top`` best flips are verified exactly. A bi-encoder scores
  documents independently, so the target's rank follows from its new score alone.

The target is the non-relevant document at rank ``target_rank`` of the clean ranking (or the
nearest non-relevant one below it). One query = one ranker call / one forward(+backward) pass.
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.ranking import RankAttackResult, words
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import WORD_EDITS, PositiveInt


def pick_target(scores: torch.Tensor, rel: list[float], target_rank: int) -> tuple[int, int]:
    """(document index, its clean 1-based rank) of the target, or (-1, 0) if none qualifies."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    for r in range(min(target_rank, len(order)) - 1, len(order)):
        if rel[order[r]] <= 0:
            return order[r], r + 1
    return -1, 0


def _rank(scores: torch.Tensor, i: int) -> int:
    order = torch.argsort(scores, descending=True, stable=True)
    return int((order == i).nonzero()[0, 0]) + 1


class _DocAttack:
    target = "document"
    modality = "ranking"
    level_domain = WORD_EDITS

    def __init__(self, target_rank: int = 50) -> None:
        self.target_rank = target_rank

    def __call__(self, model: Any, x: list[dict[str, Any]], y: list[list[float]], budget: int,
                 *, k: int = 10, rng: ExampleRNG) -> RankAttackResult:  # fmt: skip
        out, success, queries, targets, inserted = [], [], [], [], []
        for e, rel in zip(x, y, strict=True):
            scores = model.scores(e["query"], e["docs"]).double()
            t, r0 = pick_target(scores, rel, self.target_rank)
            if t < 0 or budget <= 0 or r0 <= k:
                out.append(e)
                success.append(False)
                queries.append(1)
                targets.append(t)
                inserted.append("")
                continue
            text, n_q, rank = self.promote(model, e, t, budget, k)
            docs = list(e["docs"])
            docs[t] = text
            out.append({**e, "docs": docs})
            success.append(rank <= k)
            queries.append(n_q + 1)
            targets.append(t)
            inserted.append(text[: len(text) - len(e["docs"][t])].strip())
        return RankAttackResult(out, torch.tensor(success, dtype=torch.bool),
                                torch.tensor(queries, dtype=torch.int64),
                                {"target": targets, "inserted": inserted})  # fmt: skip

    def promote(self, model: Any, e: dict[str, Any], t: int, budget: int, k: int
                ) -> tuple[str, int, int]:  # fmt: skip
        raise NotImplementedError


@attacks.register("doc-attack")
class DocAttack(_DocAttack):
    """Black-box greedy word insertion promoting a non-relevant document (budget = words inserted)."""

    def __init__(self, target_rank: PositiveInt = 50, max_words: PositiveInt = 12) -> None:
        super().__init__(target_rank)
        self.max_words = max_words

    def promote(self, model: Any, e: dict[str, Any], t: int, budget: int, k: int
                ) -> tuple[str, int, int]:  # fmt: skip
        docs = e["docs"]
        top = int(torch.argmax(model.scores(e["query"], docs)))
        pool = list(dict.fromkeys(words(e["query"]) + words(docs[top])[:20]))[: self.max_words]
        cur, n_q, rank = docs[t], 1, len(docs)
        for _ in range(budget):
            variants = [f"{w} {cur}" for w in pool]
            if hasattr(model, "prepare"):
                model.prepare(variants, persist=False)
            best = None
            for v in variants:
                trial = list(docs)
                trial[t] = v
                r = _rank(model.scores(e["query"], trial).double(), t)
                n_q += 1
                if best is None or r < best[0]:
                    best = (r, v)
            assert best is not None
            if best[0] >= rank:
                break
            rank, cur = best
            if rank <= k:
                break
        return cur, n_q, rank


@attacks.register("hotflip-doc")
class HotFlipDoc(_DocAttack):
    """White-box HotFlip trigger words for bi-encoders (budget = trigger words prepended)."""

    needs_grad = True

    def __init__(
        self, target_rank: PositiveInt = 50, steps_per_word: PositiveInt = 3, top: PositiveInt = 4
    ) -> None:
        super().__init__(target_rank)
        self.steps_per_word = steps_per_word
        self.top = top
        self._allowed: torch.Tensor | None = None

    def allowed(self, model: Any) -> torch.Tensor:
        """Mask of whole-word, alphabetic vocabulary entries (they survive re-tokenisation)."""
        if self._allowed is None:
            vocab = model.tokenizer.get_vocab()
            mask = torch.zeros(len(vocab), dtype=torch.bool)
            for tok, i in vocab.items():
                mask[i] = tok.isascii() and tok.isalpha() and len(tok) > 2
            self._allowed = mask
        return self._allowed

    def promote(self, model: Any, e: dict[str, Any], t: int, budget: int, k: int
                ) -> tuple[str, int, int]:  # fmt: skip
        if not hasattr(model, "embed"):
            raise ConfigError("hotflip-doc needs a white-box bi-encoder (a ranker with 'embed')")
        docs = e["docs"]
        others = model.scores(e["query"], docs).double()
        q = model.query_matrix([e["query"]])[0]
        emb_w = model.net.embeddings.word_embeddings.weight
        allowed = self.allowed(model)
        trig = ["the"] * budget
        n_q, best_sim = 0, -float("inf")

        def text_of(tr: list[str]) -> str:
            return " ".join(tr) + " " + docs[t]

        def rank_of(sim: float) -> int:
            s = others.clone()
            s[t] = sim
            return _rank(s, t)

        for _ in range(self.steps_per_word * budget):
            enc = model.tokens([text_of(trig)])
            ids = enc["input_ids"]
            emb = emb_w[ids].detach().clone().requires_grad_(True)
            sim = model.embed(None, enc["attention_mask"], inputs_embeds=emb)[0] @ q
            sim.backward()
            n_q += 1
            best_sim = max(best_sim, float(sim.detach()))
            g = emb.grad[0, 1 : 1 + budget]  # trigger positions follow [CLS]
            gain = g @ emb_w.T - (g * emb_w[ids[0, 1 : 1 + budget]]).sum(-1, keepdim=True)
            gain[:, ~allowed] = -float("inf")
            pos = int(gain.max(1).values.argmax())
            cands = gain[pos].topk(self.top).indices.tolist()
            tries = []
            for c in cands:
                tr = list(trig)
                tr[pos] = model.tokenizer.convert_ids_to_tokens(c)
                tries.append(tr)
            with torch.no_grad():
                enc2 = model.tokens([text_of(tr) for tr in tries])
                sims = model.embed(enc2["input_ids"], enc2["attention_mask"]) @ q
            n_q += len(tries)
            j = int(sims.argmax())
            if float(sims[j]) <= best_sim:
                break
            trig, best_sim = tries[j], float(sims[j])
            if rank_of(best_sim) <= k:
                break
        return text_of(trig), n_q, rank_of(best_sim)
