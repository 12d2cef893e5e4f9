"""BM25 scoring throughput over the bundled BBC corpus: robustlab (sparse, batched) vs rank-bm25.

Both score the same queries (BBC headlines) against the whole corpus (all 2,060 deduplicated
articles) with the same tokens; scores are checked equal. Prints queries/s and the ratios, measured
side by side in one run. Usage: ``python benchmarks/bm25_vs_rank_bm25.py [n_queries]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rank_bm25 import BM25Okapi

from robustlab.data.ranking.bbc import articles
from robustlab.models.rankers.bm25 import BM25Ranker
from robustlab.models.rankers.index import tokenize


def main(n_queries: int = 300) -> None:
    arts = articles()
    docs = [a["doc"] for a in arts]
    queries = [a["headline"] for a in arts][:n_queries]
    ours = BM25Ranker()
    tokenize("warm up")  # import the stop-word list outside the timings

    t = time.perf_counter()
    ours.weights(docs)  # index build (tokenisation + weights), once per corpus
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    s_batch = ours.score_many(queries, docs).numpy()
    t_batch = time.perf_counter() - t
    t = time.perf_counter()
    s_loop = np.stack([ours.scores(q, docs).numpy() for q in queries])
    t_loop = time.perf_counter() - t

    t = time.perf_counter()
    ref = BM25Okapi([tokenize(d) for d in docs])
    t_ref_index = time.perf_counter() - t
    q_tok = [tokenize(q) for q in queries]
    t = time.perf_counter()
    s_ref = np.stack([ref.get_scores(q) for q in q_tok])
    t_ref = time.perf_counter() - t

    assert np.allclose(s_batch, s_ref, rtol=1e-10, atol=1e-10) and np.allclose(s_loop, s_ref)
    n = len(queries)
    print(f"corpus: {len(docs)} BBC documents, {n} headline queries (scores equal: yes)")
    print(f"index build      robustlab {t_index:.2f} s   rank-bm25 {t_ref_index:.2f} s")
    print(f"rank-bm25         {n / t_ref:9.1f} queries/s")
    print(f"robustlab 1-by-1  {n / t_loop:9.1f} queries/s  ({t_ref / t_loop:.1f}x rank-bm25)")
    print(f"robustlab batched {n / t_batch:9.1f} queries/s  ({t_ref / t_batch:.1f}x rank-bm25)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
