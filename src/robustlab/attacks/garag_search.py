"""GARAG's search state: populations of typo edit sets, NSGA-II sorting, batched fitness.

Every example's population is evaluated together with all other examples' in one pipeline call per
generation (one batched reader call). Draws are laid out per example from its own sizes, so an
example's attack does not depend on the other examples of its batch.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from robustlab.attacks.garag import crowding_distance, non_dominated_ranks, token_f1

Individual = tuple[tuple[int, str], ...]  # sorted (word position, replacement word) pairs


class Search:
    """All examples' genetic searches, advanced one generation at a time."""

    def __init__(self, cfg: Any, model: Any, x: list[dict], y: list, budget: float, rng: Any):
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        self.cfg, self.model, self.x, self.y, self.rng = cfg, model, x, y, rng
        n = len(x)
        self.words = [str(e.get("context") or "").split() for e in x]
        core = [[re.sub(r"\W", "", w) for w in ws] for ws in self.words]
        self.elig = [[j for j, w in enumerate(c) if len(w) >= 3 and w.lower() not in ENGLISH_STOP_WORDS]
                     for c in core]  # fmt: skip
        self.m = [min(int(budget * len(w) + 1e-9), len(e)) for w, e in zip(self.words, self.elig, strict=True)]  # fmt: skip
        self.queries, self.success = [0] * n, [False] * n
        self.memo: list[dict[Individual, tuple[float, float, Any, str]]] = [{} for _ in range(n)]
        self.pop: list[list[Individual]] = [[] for _ in range(n)]
        self.best: list[Individual | None] = [None] * n
        self.base: list[float] = [float("nan")] * n
        self.gens = [0] * n
        self.clean_ok = [False] * n
        self.live: list[int] = []

    def run(self) -> None:
        """Clean query, initial population, then generations until success or budget."""
        cfg, n = self.cfg, len(self.x)
        clean = self.model.forward(self.x, refs=self.y)
        for i in range(n):
            self.queries[i], self.base[i] = 1, float(clean["gold_score"][i])
            self.clean_ok[i] = token_f1(clean["answer"][i], self.y[i]) >= 1
        self.live = [i for i in range(n) if self.clean_ok[i] and self.m[i] > 0]
        need = max([cfg.population * (len(e) + 3 * m) for e, m in zip(self.elig, self.m, strict=True)] + [1])  # fmt: skip
        self.evaluate(self.init_population(self.rng.uniform(need, dtype=torch.float64)))
        rank, crowd = {}, {}
        for i in self.live:
            rank[i], crowd[i] = self.survive(i, self.pop[i])
        need = max([cfg.population * (4 + 10 * m + len(e)) for e, m in zip(self.elig, self.m, strict=True)] + [1])  # fmt: skip
        for _ in range(cfg.generations):
            u = self.rng.uniform(need, dtype=torch.float64)  # one draw per generation, always
            cap = cfg.max_queries
            self.live = [i for i in self.live if not self.success[i] and self.pop[i]
                         and (cap is None or self.queries[i] < cap)]  # fmt: skip
            if not self.live:
                break
            kids = self.children(u, rank, crowd)
            self.evaluate(kids)
            for i in self.live:
                mine = [ind for j, ind in kids if j == i]
                rank[i], crowd[i] = self.survive(i, self.pop[i] + mine)
                self.gens[i] += 1

    def pick(self, i: int) -> Individual | None:
        if self.best[i] is not None or not self.memo[i]:
            return self.best[i]
        return min(self.memo[i], key=lambda c: (self.memo[i][c][1], self.memo[i][c][0]))

    def best_examples(self) -> list[dict]:
        out = []
        for i, e in enumerate(self.x):
            ind = self.pick(i)
            out.append(dict(e) if ind is None else {**e, "context": self.doc(i, ind)})
        return out

    def extras(self) -> dict[str, list[Any]]:
        picks = [self.pick(i) for i in range(len(self.x))]
        got = [self.memo[i].get(p) if p is not None else None for i, p in enumerate(picks)]
        return {
            "score_ratio": [g[0] if g else None for g in got],
            "reader_f1": [g[1] if g else None for g in got],
            "adv_gold_in_topk": [None if not g or g[2] is None else int(g[2]) for g in got],
            "generations": list(self.gens),
        }

    # fitness -----------------------------------------------------------------------------------
    def doc(self, i: int, ind: Individual) -> str:
        w = list(self.words[i])
        for p, new in ind:
            w[p] = new
        return " ".join(w)

    def evaluate(self, todo: list[tuple[int, Individual]]) -> None:
        """Fitness of new individuals (one query each, within ``max_queries``), batched."""
        cap = self.cfg.max_queries
        fresh, seen = [], set()
        for i, ind in todo:
            if (
                ind in self.memo[i]
                or (i, ind) in seen
                or (cap is not None and self.queries[i] >= cap)
            ):
                continue
            seen.add((i, ind))
            self.queries[i] += 1
            fresh.append((i, ind))
        if not fresh:
            return
        out = self.model.forward(
            [{**self.x[i], "context": self.doc(i, ind)} for i, ind in fresh],
            refs=[self.y[i] for i, _ in fresh],
        )
        graded = out.get("answer_score")
        cols = zip(fresh, out["answer"], out["gold_score"], out["gold_in_topk"], strict=True)
        for k, ((i, ind), a, s, top) in enumerate(cols):
            b = self.base[i]
            rel = 1.0 if s != s or b != b else (s / b if b > 0 else 1.0 + s - b)
            f1 = rel if self.cfg.retrieval == "lower" else (1 / rel if rel > 0 else float("inf"))
            f1_ans = token_f1(a, self.y[i])
            f2 = f1_ans if graded is None else min(float(graded[k]), f1_ans if f1_ans < 1 else 1.0)
            self.memo[i][ind] = (f1, f2, top, a)
            ok = f1_ans < 1 and (self.cfg.retrieval == "lower" or bool(top))
            if ok and not self.success[i]:
                self.success[i], self.best[i] = True, ind

    # operators ---------------------------------------------------------------------------------
    def typo(self, i: int, p: int, u: list[float]) -> str:
        from robustlab.perturbations.text.words import typo_word

        return typo_word(self.words[i][p], *u)

    def random_individual(self, i: int, u: list[float]) -> Individual:
        """``m`` distinct eligible positions (by ``len(e)`` uniforms), each with a typo (3 each)."""
        e, m = self.elig[i], self.m[i]
        picks = torch.argsort(torch.tensor(u[: len(e)]), stable=True)[:m].tolist()
        typos = [u[len(e) + 3 * t : len(e) + 3 * t + 3] for t in range(m)]
        return tuple(
            sorted((e[j], self.typo(i, e[j], t)) for j, t in zip(picks, typos, strict=True))
        )

    def init_population(self, u: torch.Tensor) -> list[tuple[int, Individual]]:
        todo = []
        for i in self.live:
            b = len(self.elig[i]) + 3 * self.m[i]
            for k in range(self.cfg.population):
                ind = self.random_individual(i, u[i, k * b : (k + 1) * b].tolist())
                self.pop[i].append(ind)
                todo.append((i, ind))
        return todo

    def children(self, u: torch.Tensor, rank: dict, crowd: dict) -> list[tuple[int, Individual]]:
        todo = []
        for i in self.live:
            pop, m, e = self.pop[i], self.m[i], self.elig[i]
            b = 4 + 10 * m + len(e)
            for k in range(self.cfg.population):
                row = u[i, k * b : (k + 1) * b].tolist()
                par = [self.tournament(i, pop, row[2 * t : 2 * t + 2], rank, crowd) for t in (0, 1)]
                union = dict(par[1])
                union.update(dict(par[0]))
                items = sorted(union.items())
                keys = torch.argsort(torch.tensor(row[4 : 4 + len(items)]), stable=True)[
                    :m
                ].tolist()
                child = dict(items[j] for j in keys)
                mut = row[4 + 2 * m :]
                for t, p in enumerate(sorted(child)):
                    if mut[5 * t] < self.cfg.mutation:
                        q = e[min(int(mut[5 * t + 1] * len(e)), len(e) - 1)]
                        if q not in child:
                            del child[p]
                            child[q] = self.typo(i, q, mut[5 * t + 2 : 5 * t + 5])
                ind = tuple(sorted(child.items()))
                if ind in self.memo[i] or (i, ind) in todo:  # a clone: a random immigrant instead
                    ind = self.random_individual(i, row[4 + 7 * m :])
                todo.append((i, ind))
        return todo

    def tournament(self, i: int, pop: list, u: list[float], rank: dict, crowd: dict) -> Individual:
        a, b = (pop[min(int(v * len(pop)), len(pop) - 1)] for v in u)
        key = lambda z: (rank[i][z], -crowd[i][z])  # noqa: E731
        return a if key(a) <= key(b) else b

    def survive(self, i: int, cands: list[Individual]) -> tuple[dict, dict]:
        cands = [c for c in dict.fromkeys(cands) if c in self.memo[i]]
        if not cands:
            self.pop[i] = []
            return {}, {}
        f = torch.tensor([self.memo[i][c][:2] for c in cands], dtype=torch.float64)
        r = non_dominated_ranks(f)
        cd = torch.zeros(len(cands), dtype=torch.float64)
        for k in r.unique().tolist():
            idx = (r == k).nonzero().flatten()
            cd[idx] = crowding_distance(f[idx])
        order = sorted(range(len(cands)), key=lambda j: (int(r[j]), -float(cd[j]), j))
        self.pop[i] = [cands[j] for j in order[: self.cfg.population]]
        return (
            {c: int(r[j]) for j, c in enumerate(cands)},
            {c: float(cd[j]) for j, c in enumerate(cands)},
        )
