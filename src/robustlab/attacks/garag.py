"""GARAG: genetic attack on a RAG pipeline with low-level typos (Cho et al., 2024, "Typos that
Broke the RAG's Back: Genetic Attack on RAG Pipeline by Simulating Documents in the Wild").

Threat model: the attacker edits the *gold document* in the corpus with keyboard typos (swap, drop,
repeat, neighbour key; :func:`robustlab.perturbations.text.words.typo_word`) in at most
``floor(budget * n)`` of its ``n`` words (words of 3+ letters, not stop words), black-box: each
candidate document costs one pipeline query (retrieval over the corpus + one reader call).

Search: NSGA-II-style genetic algorithm over sets of word edits. Two objectives, both minimised:
(1) the retriever's relevance of the edited gold document relative to the clean one,
``S(q, d') / S(q, d)`` (``retrieval="lower"``: push it out of the top-k; ``retrieval="keep"``
minimises the inverse, as the official implementation does, so the document stays retrieved and
misleads the reader); (2) the reader's support for the reference answer: the reader's
``answer_scores`` when it grades answers (the cloze reader), else the token F1 of the pipeline's
answer with the reference (the paper uses the answer's likelihood, which black-box generators do
not expose). Each generation: binary tournament on (front rank, crowding distance),
crossover (a child draws its edit positions from the union of its parents'), mutation (each edit
moved to a fresh position with probability ``mutation``; clones become random immigrants), then
survival of the ``population`` best of parents + children by non-dominated sorting and crowding
distance. An example stops at its first success (the answer no longer matches; with ``keep``
also the gold still in the top-k) or when the generations or ``max_queries`` run out. Randomness comes only from the per-example streams.

Example::

    garag = attacks.create("garag", {"population": 8, "generations": 4})
    res = garag(rag, data.x, data.y, 0.1, rng=ExampleRNG.from_seed(0, data.ids))
    res.success, res.queries, res.extra["adv_gold_in_topk"]
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from robustlab.attacks.text import TextAttackResult
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import EDIT_RATE, PositiveInt, Rate


def non_dominated_ranks(f: torch.Tensor) -> torch.Tensor:
    """Front index of each row of ``f`` ``[n, m]`` (minimised): 0 = not dominated by any row."""
    le = (f[:, None, :] <= f[None, :, :]).all(-1)
    lt = (f[:, None, :] < f[None, :, :]).any(-1)
    dom = le & lt  # dom[i, j]: i dominates j
    count = dom.sum(0)
    rank = torch.full((len(f),), -1, dtype=torch.long)
    k = 0
    while bool((rank < 0).any()):
        front = (count == 0) & (rank < 0)
        rank[front] = k
        count = count - dom[front].sum(0)
        k += 1
    return rank


def crowding_distance(f: torch.Tensor) -> torch.Tensor:
    """NSGA-II crowding distance of the rows of one front ``[n, m]`` (boundaries: inf)."""
    n, m = f.shape
    d = torch.zeros(n, dtype=torch.float64)
    if n <= 2:
        return torch.full((n,), float("inf"), dtype=torch.float64)
    for j in range(m):
        order = torch.argsort(f[:, j], stable=True)
        v = f[order, j].double()
        span = float(v[-1] - v[0])
        d[order[0]] = d[order[-1]] = float("inf")
        if span > 0:
            d[order[1:-1]] += (v[2:] - v[:-2]) / span
    return d


def token_f1(answer: str, ref: Any) -> float:
    """SQuAD token F1 (1.0 when the reference is contained), best over references."""
    from robustlab.metrics.failsafe import contains, normalize

    if contains(answer, ref):
        return 1.0
    best = 0.0
    for r in ref if isinstance(ref, list | tuple) else [ref]:
        a, b = normalize(answer).split(), normalize(str(r)).split()
        common = sum((Counter(a) & Counter(b)).values())
        if common:
            p, rc = common / len(a), common / len(b)
            best = max(best, 2 * p * rc / (p + rc))
    return best


@attacks.register("garag")
class GARAG:
    """Genetic multi-objective typo attack on the gold document of a RAG pipeline (see module)."""

    modality = "rag"
    threat = "edit"
    level_domain = EDIT_RATE  # the share of words edited

    def __init__(self, population: PositiveInt = 8, generations: PositiveInt = 4, mutation: Rate = 0.4,
                 retrieval: str = "lower", max_queries: PositiveInt | None = None) -> None:  # fmt: skip
        self.population, self.generations = population, generations
        self.mutation, self.retrieval, self.max_queries = mutation, retrieval, max_queries

    def __call__(self, model: object, x: list[dict], y: list, budget: float, *,
                 rng: ExampleRNG) -> TextAttackResult:  # fmt: skip
        from robustlab.attacks.garag_search import Search

        if self.population < 2 or self.generations < 0 or not 0 <= self.mutation <= 1:
            raise ConfigError("garag needs population >= 2, generations >= 0, 0 <= mutation <= 1")
        if self.retrieval not in ("lower", "keep"):
            raise ConfigError(f"garag retrieval must be 'lower' or 'keep', got {self.retrieval!r}")
        if not 0 <= budget <= 1:
            raise ConfigError(f"garag budget is a word edit rate in [0, 1], got {budget}")
        if not hasattr(model, "forward"):
            raise ConfigError(
                f"garag needs a RAG pipeline (models 'rag'), got {type(model).__name__}"
            )
        search = Search(self, model, list(x), list(y), budget, rng)
        search.run()
        return TextAttackResult(
            x_adv=search.best_examples(),
            success=torch.tensor(search.success, dtype=torch.bool),
            queries=torch.tensor(search.queries, dtype=torch.long),
            extra=search.extras(),
        )
