"""Genetic word-substitution attack (Alzantot et al., EMNLP 2018, arXiv:1804.07998).

Threat model: as :mod:`~robustlab.attacks.text.textfooler` -- black-box scores, word edit rate <=
``budget``, MiniLM similarity to the original >= ``min_similarity``, WordNet synonyms of the same
part of speech, no stop words, at most ``max_queries`` texts scored per example.

``Perturb(x)`` picks a random word, with probability proportional to its number of candidates (as
TextAttack does; an already changed word once the edit budget is spent), scores every allowed substitution and keeps the one with the highest fitness
``1 - p_y``. The population starts as ``pop_size`` perturbations of the original; each generation
keeps the elite, samples parent pairs with probability ``softmax(fitness / temperature)``, crosses
them over word by word (uniformly), reverts random changes beyond the edit budget, falls back to the
first parent when a child breaks the similarity constraint, and mutates each child by ``Perturb``.
It stops when a member fools the model. Every text's members are scored together with every other
text's, in one model call per step; randomness is per example (batch-order invariant).

Example::

    atk = attacks.create("genetic", {"pop_size": 10, "generations": 5})
    res = atk(clf, texts, labels, 0.2, rng=ExampleRNG.from_seed(0, torch.arange(len(texts))))
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
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
from robustlab.core.types import EDIT_RATE, NonNegative, PositiveInt, Rate


@attacks.register("genetic")
class Genetic:
    """Population-based synonym substitution (selection, crossover, greedy mutation)."""

    modality = "text"
    threat = "edit"
    level_domain = EDIT_RATE  # the share of words edited

    def __init__(
        self,
        pop_size: PositiveInt = 20,
        generations: PositiveInt = 10,
        temperature: NonNegative = 0.3,
        min_similarity: Rate = 0.8,
        pos: str = "dominant",
        candidates: str = "wordnet",
        max_candidates: PositiveInt = 8,
        max_queries: PositiveInt | None = None,
        batch_size: int = 1024,
        constraints: bool | dict[str, Any] = True,
    ) -> None:
        self.pop_size = pop_size
        self.generations = generations
        self.temperature = temperature
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
        y = check_inputs(model, x, y, budget, "genetic")
        if self.pop_size < 2 or self.generations < 0 or self.temperature <= 0:
            raise ConfigError("genetic needs pop_size >= 2, generations >= 0 and temperature > 0")
        n, P = len(x), self.pop_size
        self._x, self._y, self._texts = list(x), y, [Words(t) for t in x]
        self._cands = all_candidates(self, self._texts)
        self._cap = max_edits(self._texts, budget).tolist()
        self._sc = sc = Scorer(model, y, self.max_queries, self.batch_size)
        w_max = max(max((len(t) for t in self._texts), default=0), 1)
        p0 = sc.probs(list(x), torch.arange(n))
        done = p0.argmax(dim=1) != y if n else torch.zeros(0, dtype=torch.bool)
        has = torch.tensor(
            [c > 0 and any(cs) for c, cs in zip(self._cap, self._cands, strict=True)]
        )
        act = (~done & has).tolist() if n else []
        u0 = rng.uniform(P, dtype=torch.float64).tolist()
        items = [(i, list(self._texts[i].words)) for i in range(n) if act[i] for _ in range(P)]
        pos = [u0[i][m] for i in range(n) if act[i] for m in range(P)]
        words, fit, fool = self._perturb(items, pos)
        pop = {i: words[k * P : (k + 1) * P] for k, i in enumerate(i for i in range(n) if act[i])}
        fits = {i: fit[k * P : (k + 1) * P] for k, i in enumerate(pop)}
        fools = {i: fool[k * P : (k + 1) * P] for k, i in enumerate(pop)}
        for g in range(self.generations + 1):
            u_sel = rng.uniform(P, 2, dtype=torch.float64)
            u_cross = rng.uniform(w_max, P, dtype=torch.float64).tolist()
            u_rep = rng.uniform(w_max, P, dtype=torch.float64).tolist()
            u_pos = rng.uniform(P, dtype=torch.float64).tolist()
            left = sc.left().tolist()
            for i in list(pop):
                if bool(fools[i].any()):
                    done[i] = True
                live = not done[i] and left[i] > 0
                if not live:
                    act[i] = False
            live_ids = [i for i in pop if act[i]]
            if not live_ids or g == self.generations:
                break
            items, pos, elites, first = [], [], {}, []
            for i in live_ids:
                f = fits[i]
                elites[i] = int(f.argmax())
                w = torch.softmax(f / self.temperature, dim=0).cumsum(0)
                par = torch.searchsorted(w, (u_sel[i] * w[-1]).contiguous()).clamp_max(P - 1)
                for m in range(P - 1):
                    a, b = pop[i][int(par[m, 0])], pop[i][int(par[m, 1])]
                    child = [a[j] if u_cross[i][j][m] < 0.5 else b[j] for j in range(len(a))]
                    items.append((i, self._repair(i, child, [r[m] for r in u_rep[i]])))
                    first.append(a)
                    pos.append(u_pos[i][m])
            items = self._similar(items, first)
            words, fit, fool = self._perturb(items, pos)
            for k, i in enumerate(live_ids):
                e = elites[i]
                sl = slice(k * (P - 1), (k + 1) * (P - 1))
                pop[i] = [pop[i][e]] + words[sl]
                fits[i] = torch.cat([fits[i][e : e + 1], fit[sl]])
                fools[i] = torch.cat([fools[i][e : e + 1], fool[sl]])
        adv = list(x)
        for i in pop:
            key = fits[i] + 2.0 * fools[i].double()  # a fooling member first, then fitness
            b = int(key.argmax())
            if fits[i][b] > -torch.inf:
                adv[i] = self._texts[i].join(pop[i][b])
                done[i] = bool(fools[i][b])
        self._x = self._texts = self._cands = []  # drop per-call state (keep only hyperparameters)
        return result(list(x), adv, done, sc, self.min_similarity > 0, self)

    def _repair(self, i: int, child: list[str], u: list[float]) -> list[str]:
        """Revert the changes of ``child`` beyond the edit budget (those with the largest ``u``)."""
        orig = self._texts[i].words
        changed = [j for j in range(len(child)) if child[j] != orig[j]]
        for j in sorted(changed, key=lambda j: u[j])[self._cap[i] :]:
            child[j] = orig[j]
        return child

    def _similar(
        self, items: list[tuple[int, list[str]]], fallback: list[list[str]]
    ) -> list[tuple[int, list[str]]]:
        """Children that break the similarity constraint are replaced by their first parent."""
        if self.min_similarity <= 0 or not items:
            return items
        texts = [self._texts[i].join(w) for i, w in items]
        ok = (similarity([self._x[i] for i, _ in items], texts) >= self.min_similarity).tolist()
        return [
            it if good else (it[0], list(f))
            for it, f, good in zip(items, fallback, ok, strict=True)
        ]

    def _perturb(
        self, items: list[tuple[int, list[str]]], u: list[float]
    ) -> tuple[list[list[str]], torch.Tensor, torch.Tensor]:
        """Mutate each member (example ``i``, words) at a random word; new words, fitness, fooled."""
        rows, owner, member, sub = [], [], [], []
        for k, (i, words) in enumerate(items):
            orig, cands = self._texts[i].words, self._cands[i]
            changed = [j for j in range(len(words)) if words[j] != orig[j]]
            choices = (
                changed if len(changed) >= self._cap[i] else [j for j, c in enumerate(cands) if c]
            )
            # a word is picked with probability proportional to its number of candidates
            cum = list(accumulate(len(cands[j]) for j in choices))
            j = choices[min(bisect_right(cum, u[k] * cum[-1]), len(cum) - 1)]
            for c in cands[j]:
                if c != words[j]:
                    rows.append(self._texts[i].join(words[:j] + [c] + words[j + 1 :]))
                    owner, member, sub = owner + [i], member + [k], sub + [(j, c)]
        ok = torch.ones(len(rows), dtype=torch.bool)
        if self.min_similarity > 0 and rows:
            ok = similarity([self._x[i] for i in owner], rows) >= self.min_similarity
        has = set(torch.tensor(member, dtype=torch.int64)[ok].tolist())
        keep = [r for r in range(len(rows)) if ok[r]]
        for k, (i, words) in enumerate(items):  # members without a variant are scored as they are
            if k not in has:
                rows.append(self._texts[i].join(words))
                owner, member, sub = owner + [i], member + [k], sub + [None]
                keep.append(len(rows) - 1)
        keep.sort(key=lambda r: (owner[r], r))
        kt = torch.tensor(keep, dtype=torch.int64)
        own = torch.tensor(owner, dtype=torch.int64)[kt] if keep else kt
        kt = kt[within(own, self._sc.left())]
        own = torch.tensor(owner, dtype=torch.int64)[kt] if kt.numel() else kt
        mem = torch.tensor(member, dtype=torch.int64)[kt] if kt.numel() else kt
        probs = self._sc.probs([rows[r] for r in kt.tolist()], own)
        fit_r = 1.0 - probs[torch.arange(len(kt)), self._y[own]] if kt.numel() else probs[:, 0]
        fool_r = probs.argmax(dim=1) != self._y[own] if kt.numel() else fit_r > 2
        best = segment_best(fit_r, mem, len(items))
        words_out, fit, fool = [], torch.full((len(items),), -torch.inf, dtype=torch.float64), []
        for k, (_, words) in enumerate(items):
            b = int(best[k])
            w = list(words)
            if b >= 0:
                s = sub[int(kt[b])]
                if s is not None:
                    w[s[0]] = s[1]
                fit[k] = fit_r[b]
            words_out.append(w)
            fool.append(b >= 0 and bool(fool_r[b]))
        return words_out, fit, torch.tensor(fool, dtype=torch.bool)
