"""Adversarial query attack (S1 task 4): edit at most ``budget`` query words to demote the relevant
documents out of the top-k (black-box: ranker scores only).

Greedy word-importance search in the style of TextFooler (Jin et al., 2020) for rankers (Wu et al.,
2022, "Are Neural Ranking Models Robust?"): words are ranked by how much deleting each one demotes
the first relevant document; then, word by word in that order, the best of its candidate edits
(deletion, keyboard typos, WordNet synonyms) is kept if it demotes the relevant document further,
until the edit budget is spent or the relevant document leaves the top-k. The objective is the rank
of the first relevant document, ties broken by the margin between the k-th non-relevant score and
the best relevant score. One query = one query string scored against the candidate list.

Example::

    attack = attacks.create("query-attack")
    task.attack(attack, models.create("bm25"), data, level=2, norm="inf", rng=rng)
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.ranking import RankAttackResult, words
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import WORD_EDITS, PositiveInt
from robustlab.models.rankers import score_many
from robustlab.perturbations.text.words import typo_word


def objective(s: torch.Tensor, rel: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of scores ``[V, D]``: rank of the first relevant doc + a margin in (0, 1) (higher =
    more demoted); the integer part is the rank under the task's stable ordering."""
    order = torch.argsort(s, dim=1, descending=True, stable=True)
    hit = rel[order]
    rank = hit.double().argmax(1) + 1
    best_rel = s.masked_fill(~rel, -float("inf")).max(1).values
    non = s.masked_fill(rel, -float("inf"))
    kth = non.topk(min(k, non.shape[1]), dim=1).values[:, -1]
    return rank.double() + torch.sigmoid(kth - best_rel)


@attacks.register("query-attack")
class QueryAttack:
    """Greedy word-importance query attack (delete / typo / synonym per word), budget = words edited."""

    target = "query"
    modality = "ranking"
    level_domain = WORD_EDITS

    def __init__(self, typos: PositiveInt = 2, synonyms: PositiveInt = 4) -> None:
        self.typos = typos
        self.synonyms = synonyms

    def candidates(self, word: str, u: list[float]) -> list[str]:
        from robustlab.perturbations.text.wordnet import synonyms_table

        out = [""]  # deletion
        out += [typo_word(word, u[3 * i], u[3 * i + 1], u[3 * i + 2]) for i in range(self.typos)]
        out += list(synonyms_table().get(word.lower(), ())[: self.synonyms])
        return list(dict.fromkeys(c for c in out if c != word))

    def __call__(self, model: Any, x: list[dict[str, Any]], y: list[list[float]], budget: int,
                 *, k: int = 10, rng: ExampleRNG) -> RankAttackResult:  # fmt: skip
        w_max = max((len(words(e["query"])) for e in x), default=1)
        u = rng.uniform(max(w_max, 1), 3 * self.typos, dtype=torch.float64).tolist()
        out, success, queries, edits = [], [], [], []
        for i, e in enumerate(x):
            q, n_q, ok, n_edit = self._one(model, e, y[i], budget, k, u[i])
            out.append({**e, "query": q})
            success.append(ok)
            queries.append(n_q)
            edits.append(n_edit)
        return RankAttackResult(out, torch.tensor(success, dtype=torch.bool),
                                torch.tensor(queries, dtype=torch.int64), {"edits": edits})  # fmt: skip

    def _one(self, model: Any, e: dict[str, Any], y: list[float], budget: int, k: int,
             u: list[list[float]]) -> tuple[str, int, bool, int]:  # fmt: skip
        docs, ws = e["docs"], words(e["query"])
        rel = torch.as_tensor(y, dtype=torch.float64) > 0
        if not rel.any() or not ws or budget <= 0:
            return e["query"], 0, False, 0
        base = objective(score_many(model, [e["query"]], docs), rel, k)[0]
        n_q = 1
        if base > k + 1:
            return e["query"], n_q, False, 0  # already outside the top-k: nothing to attack
        drops = [" ".join(ws[:j] + ws[j + 1 :]) for j in range(len(ws))]
        imp = objective(score_many(model, drops, docs), rel, k)
        n_q += len(drops)
        cur, best, n_edit = list(ws), base, 0
        for j in torch.argsort(imp, descending=True, stable=True).tolist():
            if n_edit >= budget or best >= k + 1:
                break
            pairs = [(c, " ".join(w for w in cur[:j] + [c] + cur[j + 1 :] if w))
                     for c in self.candidates(ws[j], u[j])]  # fmt: skip
            pairs = [(c, v) for c, v in pairs if v]
            if not pairs:
                continue
            val = objective(score_many(model, [v for _, v in pairs], docs), rel, k)
            n_q += len(pairs)
            top = int(val.argmax())
            if val[top] > best:
                best, n_edit, cur[j] = val[top], n_edit + 1, pairs[top][0]
        return " ".join(w for w in cur if w) or e["query"], n_q, bool(best >= k + 1), n_edit
