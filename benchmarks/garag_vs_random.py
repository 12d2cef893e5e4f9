"""GARAG vs random search at the same query budget, on the BBC cloze QA RAG pipeline.

Random search = GARAG's own initial population with no generations (``population=Q,
generations=0``): Q independent random typo sets at the same edit budget. Both attack the same
clean-correct examples of ``bbc-qa`` through BM25 (top-2) + the extractive cloze reader. Prints the
attack success rate, mean queries and wall time of both, measured side by side in one run.

    .venv/bin/python benchmarks/garag_vs_random.py [n_examples] [budget]
"""

from __future__ import annotations

import sys
import time

from robustlab.attacks.garag import GARAG
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG


def main(n: int = 60, budget: float = 0.05) -> None:
    rag = models.create("rag", {"retriever": "bm25", "reader": "cloze-reader", "k": 2})
    data = datasets.create("bbc-qa", {"n": n})
    rows = []
    for name, atk in (
        ("garag (pop 8, 4 gens)", GARAG(population=8, generations=4)),
        ("random search (40 draws)", GARAG(population=40, generations=0)),
    ):
        t = time.perf_counter()
        res = atk(rag, data.x, data.y, budget, rng=ExampleRNG.from_seed(0, data.ids))
        dt = time.perf_counter() - t
        rows.append(
            (name, res.success.float().mean().item(), res.queries.float().mean().item(), dt)
        )
    print(f"{n} examples, edit budget {budget}")
    for name, asr, q, dt in rows:
        print(f"{name:26s} success {asr:.3f}  mean queries {q:5.1f}  wall {dt:5.1f}s")
    print(f"success ratio garag / random: {rows[0][1] / max(rows[1][1], 1e-9):.2f}")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 60,
        float(sys.argv[2]) if len(sys.argv) > 2 else 0.05,
    )
