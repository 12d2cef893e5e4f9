"""Beam search over word substitutions in word-importance order (TextAttack's ``BeamSearch``,
Morris et al., EMNLP 2020 demos; greedy TextFooler is beam width 1).

Threat model: as :mod:`~robustlab.attacks.text.textfooler` (word edit rate <= ``budget``, MiniLM
similarity >= ``min_similarity``, WordNet synonyms of the same part of speech, no stop words,
``max_queries`` texts scored per example).

Words are visited in TextFooler's deletion-importance order. At each word, every text of the beam
is expanded with every candidate (all beams of all texts scored in one model call); the
``beam_width`` texts with the lowest true-class probability among the old beam and its expansions
are kept. Among expansions that fool the model, the most similar is returned. With
``beam_width=1`` this is exactly :class:`~robustlab.attacks.text.textfooler.TextFooler`.

Example::

    atk = attacks.create("beam", {"beam_width": 4})
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
from robustlab.attacks.text.textfooler import TextFooler, within
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import PositiveInt, Rate


@attacks.register("beam")
class BeamSearch(TextFooler):
    """Importance-ordered beam search over synonym substitutions."""

    def __init__(
        self,
        beam_width: PositiveInt = 4,
        min_similarity: Rate = 0.8,
        pos: str = "dominant",
        candidates: str = "wordnet",
        max_candidates: PositiveInt = 30,
        max_queries: PositiveInt | None = None,
        batch_size: int = 1024,
        inflect: bool = True,
        constraints: bool | dict[str, Any] = True,
    ) -> None:
        super().__init__(min_similarity, pos, candidates, max_candidates, max_queries, batch_size,
                         inflect)  # fmt: skip
        self.beam_width = beam_width
        self.constraints = constraints

    def __call__(
        self, model: Any, x: list[str], y: torch.Tensor, budget: float, *, rng: ExampleRNG
    ) -> TextAttackResult:
        y = check_inputs(model, x, y, budget, "beam")
        if not isinstance(self.beam_width, int) or self.beam_width < 1:
            raise ConfigError(f"beam_width must be a positive int, got {self.beam_width}")
        n, k = len(x), self.beam_width
        texts = [Words(t) for t in x]
        sc = Scorer(model, y, self.max_queries, self.batch_size)
        p0 = sc.probs(list(x), torch.arange(n))
        done = p0.argmax(dim=1) != y if n else torch.zeros(0, dtype=torch.bool)
        cands = all_candidates(self, texts)
        cap = max_edits(texts, budget).tolist()
        order = self._importance(texts, cands, y, p0, sc, ~done & (torch.tensor(cap) > 0))
        py0 = p0[torch.arange(n), y].tolist() if n else []
        beams = [[(list(w.words), 0, py0[i])] for i, w in enumerate(texts)]  # (words, edits, p_y)
        adv, use_sim = list(x), self.min_similarity > 0
        for r in range(max((len(o) for o in order), default=0)):
            left = sc.left()
            rows, owner, new = [], [], []
            for i in range(n):
                if done[i] or r >= len(order[i]) or left[i] <= 0:
                    continue
                j = order[i][r]
                for words, edits, _ in beams[i]:
                    if edits < cap[i]:
                        for c in cands[i][j]:
                            w2 = words[:j] + [c] + words[j + 1 :]
                            rows.append(texts[i].join(w2))
                            owner.append(i)
                            new.append((w2, edits + 1))
            if not rows:
                continue
            own = torch.tensor(owner, dtype=torch.int64)
            sim = similarity([x[i] for i in owner], rows) if use_sim else torch.ones(len(rows))
            kept = (sim >= self.min_similarity).nonzero().flatten()
            kept = kept[within(own[kept], left)]
            if kept.numel() == 0:
                continue
            own_k = own[kept]
            probs = sc.probs([rows[q] for q in kept.tolist()], own_k)
            py = probs[torch.arange(len(kept)), y[own_k]]
            fooled = probs.argmax(dim=1) != y[own_k]
            best_f = segment_best(torch.where(fooled, sim[kept].double(), -torch.inf), own_k, n)
            for i in sorted(set(own_k.tolist())):
                b = int(best_f[i])
                if b >= 0 and bool(fooled[b]):
                    adv[i], done[i] = rows[int(kept[b])], True
                    continue
                mine = (own_k == i).nonzero().flatten().tolist()
                pool = beams[i] + [(*new[int(kept[q])], float(py[q])) for q in mine]
                rank = sorted(range(len(pool)), key=lambda q: pool[q][2])  # stable: old beams first
                beams[i] = [pool[q] for q in rank[:k]]
        for i in range(n):
            if not done[i] and beams[i][0][1] > 0:
                adv[i] = texts[i].join(beams[i][0][0])
        return result(list(x), adv, done, sc, use_sim, self)
