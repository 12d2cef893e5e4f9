"""Random synonym substitution: the baseline the search attacks must beat at the same budget.

Threat model: as :mod:`~robustlab.attacks.text.textfooler` (word edit rate <= ``budget``, MiniLM
similarity >= ``min_similarity``, WordNet synonyms of the same part of speech, no stop words).
Each try substitutes ``min(floor(budget * n_words), eligible words)`` words chosen uniformly at
random (per-example stream) with a uniformly drawn candidate each. Tries that break the similarity
constraint are dropped unscored; the others are scored in one model call; the first fooling try
is returned, else the one with the lowest true-class probability (else the clean text).

Example::

    atk = attacks.create("random-substitution", {"tries": 1})
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
from robustlab.attacks.text.textfooler import within
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, PositiveInt, Rate


@attacks.register("random-substitution")
class RandomSubstitution:
    """``tries`` random synonym substitutions at the full edit budget; keep the most damaging."""

    modality = "text"
    threat = "edit"
    level_domain = EDIT_RATE  # the share of words edited

    def __init__(
        self,
        tries: PositiveInt = 1,
        min_similarity: Rate = 0.8,
        pos: str = "dominant",
        candidates: str = "wordnet",
        max_candidates: PositiveInt = 30,
        max_queries: PositiveInt | None = None,
        batch_size: int = 1024,
        constraints: bool | dict[str, Any] = True,
    ) -> None:
        self.tries = tries
        self.min_similarity = min_similarity
        self.pos = pos
        self.candidates = candidates
        self.max_candidates = max_candidates
        self.max_queries = max_queries
        self.batch_size = batch_size
        self.constraints = constraints

    def __call__(
        self, model: Any, x: list[str], y: torch.Tensor, budget: float, *, rng: ExampleRNG
    ) -> TextAttackResult:
        y = check_inputs(model, x, y, budget, "random-substitution")
        if not isinstance(self.tries, int) or self.tries < 1:
            raise ConfigError(f"random-substitution tries must be a positive int, got {self.tries}")
        n, nt = len(x), self.tries
        texts = [Words(t) for t in x]
        w_max = max((len(t) for t in texts), default=0)
        u = rng.uniform(max(w_max, 1), nt, 2, dtype=torch.float64).tolist()  # [B, W, tries, 2]
        sc = Scorer(model, y, self.max_queries, self.batch_size)
        p0 = sc.probs(list(x), torch.arange(n))
        done = (p0.argmax(dim=1) != y).tolist()
        cap = max_edits(texts, budget).tolist()
        rows, owner = [], []
        every = all_candidates(self, texts)
        for i, t in enumerate(texts):
            cands = every[i]
            elig = [j for j, c in enumerate(cands) if c]
            k = min(cap[i], len(elig))
            if done[i] or k == 0:
                continue
            for tr in range(nt):
                words = list(t.words)
                for j in sorted(elig, key=lambda j: u[i][j][tr][0])[:k]:
                    c = cands[j]
                    words[j] = c[min(int(u[i][j][tr][1] * len(c)), len(c) - 1)]
                rows.append(t.join(words))
                owner.append(i)
        own = torch.tensor(owner, dtype=torch.int64)
        use_sim = self.min_similarity > 0
        ok = torch.ones(len(rows), dtype=torch.bool)
        if use_sim and rows:
            ok = similarity([x[i] for i in owner], rows) >= self.min_similarity
        kept = ok.nonzero().flatten()
        kept = kept[within(own[kept], sc.left())]
        adv = list(x)
        success = torch.tensor(done, dtype=torch.bool)
        if kept.numel():
            own_k = own[kept]
            probs = sc.probs([rows[k] for k in kept.tolist()], own_k)
            fooled = probs.argmax(dim=1) != y[own_k]
            py = probs[torch.arange(len(kept)), y[own_k]]
            first = segment_best(fooled.double(), own_k, n)  # first fooling try, else first try
            low = segment_best(-py, own_k, n)
            for i in (first >= 0).nonzero().flatten().tolist():
                b = int(first[i]) if fooled[int(first[i])] else int(low[i])
                adv[i], success[i] = rows[int(kept[b])], bool(fooled[b])
        return result(list(x), adv, success, sc, use_sim, self)
