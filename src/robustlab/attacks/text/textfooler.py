"""TextFooler: greedy word-importance substitution (Jin et al., AAAI 2020, arXiv:1907.11932).

Threat model: black-box scores; change at most ``floor(budget * n_words)`` words of a text by
substituting synonyms (word edit rate <= ``budget``), keeping the MiniLM sentence-embedding cosine
similarity to the original >= ``min_similarity``; stop words are never changed; substitutes share
the word's part of speech (WordNet, :mod:`~robustlab.attacks.text.lexicon`).

1. Word importance by deletion (paper eq. 2): ``I_j = p_y(x) - p_y(x without w_j)``, plus
   ``p_k(x without w_j) - p_k(x)`` when deleting ``w_j`` changes the prediction to ``k``. Only
   words with candidates are scored: all deletions of all texts in one batched model call.
2. In decreasing importance, substitute each candidate for the word (all candidates of all texts of
   the batch in one model call). Among candidates that flip the prediction, take the most similar
   and stop; otherwise keep the candidate with the lowest true-class probability if it lowers it.

``inflect=False`` uses uninflected WordNet lemmas as candidates, as NLTK and TextAttack's WordNet
swap do (for like-for-like comparisons). Stops at success, when the edit budget is spent, or when ``max_queries`` model calls are spent
(one text scored = one query, per example; the clean text costs one).

Example::

    atk = attacks.create("textfooler", {"min_similarity": 0.8})
    res = atk(clf, texts, labels, 0.2, rng=ExampleRNG.from_seed(0, torch.arange(len(texts))))
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.text import TextAttackResult
from robustlab.attacks.text.common import (
    Scorer,
    Words,
    all_candidates,
    check_inputs,
    max_edits,
    result,
    segment_best,
    similarity,
)
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, PositiveInt, Rate


def within(owner: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Mask of rows (grouped by owner, in order) among the first ``left[owner]`` of their owner."""
    if owner.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    idx = torch.arange(len(owner))
    start = torch.full((len(left),), len(owner)).scatter_reduce(0, owner, idx, "amin")
    return (idx - start[owner]) < left[owner]


@attacks.register("textfooler")
class TextFooler:
    """Greedy importance-ordered synonym substitution under edit, similarity and query budgets."""

    modality = "text"
    threat = "edit"
    level_domain = EDIT_RATE  # the share of words edited

    def __init__(
        self,
        min_similarity: Rate = 0.8,
        pos: str = "dominant",
        candidates: str = "wordnet",
        max_candidates: PositiveInt = 30,
        max_queries: PositiveInt | None = None,
        batch_size: int = 1024,
        inflect: bool = True,
        constraints: bool | dict[str, Any] = True,
    ) -> None:
        self.min_similarity = min_similarity
        self.pos = pos
        self.candidates = candidates
        self.max_candidates = max_candidates
        self.inflect = inflect
        self.max_queries = max_queries
        self.batch_size = batch_size
        self.constraints = constraints

    def __call__(
        self, model: Any, x: list[str], y: torch.Tensor, budget: float, *, rng: ExampleRNG
    ) -> TextAttackResult:
        y = check_inputs(model, x, y, budget, "textfooler")
        n = len(x)
        texts = [Words(t) for t in x]
        sc = Scorer(model, y, self.max_queries, self.batch_size)
        p0 = sc.probs(list(x), torch.arange(n))
        done = p0.argmax(dim=1) != y if n else torch.zeros(0, dtype=torch.bool)
        cands = all_candidates(self, texts)
        cap = max_edits(texts, budget)
        order = self._importance(texts, cands, y, p0, sc, ~done & (cap > 0))
        cur = [list(w.words) for w in texts]
        cur_py = p0[torch.arange(n), y] if n else torch.zeros(0, dtype=torch.float64)
        changed = torch.zeros(n, dtype=torch.int64)
        use_sim = self.min_similarity > 0
        for r in range(max((len(o) for o in order), default=0)):
            left = sc.left()
            act = (~done & (changed < cap) & (left > 0)).tolist()
            rows, owner, pos, sub = [], [], [], []
            for i in range(n):
                if act[i] and r < len(order[i]):
                    j = order[i][r]
                    for c in cands[i][j]:
                        rows.append(texts[i].join(cur[i][:j] + [c] + cur[i][j + 1 :]))
                        owner.append(i)
                        pos.append(j)
                        sub.append(c)
            if not rows:
                continue
            own = torch.tensor(owner, dtype=torch.int64)
            sim = similarity([x[i] for i in owner], rows) if use_sim else torch.ones(len(rows))
            keep = sim >= self.min_similarity
            kept = keep.nonzero().flatten()
            kept = kept[within(own[kept], left)]
            if kept.numel() == 0:
                continue
            own_k = own[kept]
            probs = sc.probs([rows[k] for k in kept.tolist()], own_k)
            py = probs[torch.arange(len(kept)), y[own_k]]
            fooled = probs.argmax(dim=1) != y[own_k]
            key_f = torch.where(fooled, sim[kept].double(), -torch.inf)
            best_f = segment_best(key_f, own_k, n)
            best_f = torch.where((best_f >= 0) & fooled[best_f.clamp_min(0)], best_f, -1)
            best = torch.where(best_f >= 0, best_f, segment_best(-py, own_k, n))
            for i in (best >= 0).nonzero().flatten().tolist():
                b = int(best[i])
                if best_f[i] < 0 and py[b] >= cur_py[i]:
                    continue
                k = int(kept[b])
                cur[i][pos[k]] = sub[k]
                cur_py[i] = py[b]
                changed[i] += 1
                done[i] = bool(best_f[i] >= 0)
        adv = [
            t.join(w) if c else x[i]
            for i, (t, w, c) in enumerate(zip(texts, cur, changed > 0, strict=True))
        ]
        return result(list(x), adv, done, sc, use_sim, self)

    def _importance(
        self,
        texts: list[Words],
        cands: list[list[list[str]]],
        y: torch.Tensor,
        p0: torch.Tensor,
        sc: Scorer,
        active: torch.Tensor,
    ) -> list[list[int]]:
        """Per text, the positions with candidates in decreasing deletion importance."""
        left = sc.left().tolist()
        rows, owner, pos = [], [], []
        for i, t in enumerate(texts):
            if active[i]:
                elig = [j for j, c in enumerate(cands[i]) if c][: left[i]]
                rows += [t.join(t.words[:j] + [""] + t.words[j + 1 :]) for j in elig]
                owner += [i] * len(elig)
                pos += elig
        order: list[list[int]] = [[] for _ in texts]
        if not rows:
            return order
        own = torch.tensor(owner, dtype=torch.int64)
        p = sc.probs(rows, own)
        yi = y[own]
        r = torch.arange(len(rows))
        imp = p0[own, yi] - p[r, yi]
        new = p.argmax(dim=1)
        flip = new != yi
        imp = imp + torch.where(flip, p[r, new] - p0[own, new], 0.0)
        # sort by owner, then importance (descending), ties in text order
        idx = torch.argsort(-imp, stable=True)
        idx = idx[torch.argsort(own[idx], stable=True)]
        for k in idx.tolist():
            order[owner[k]].append(pos[k])
        return order
