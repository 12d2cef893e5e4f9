"""Dense retrieval with cached document embeddings: first run (encode + store) vs cached runs.

Evaluates MiniLM on BBC known-item queries three ways, side by side: (1) a fresh ranker with an empty
disk cache (encodes the corpus, writes ``<model>-<corpus hash>.pt``), (2) the same ranker again
(in-memory embeddings), (3) a new ranker instance as in a new run (embeddings read from disk).
Usage: ``python benchmarks/dense_cache.py [max_docs]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ["ROBUSTLAB_CACHE"] = tempfile.mkdtemp(prefix="robustlab-dense-bench-")

from robustlab.core.registry import datasets, models, tasks  # noqa: E402


def main(max_docs: int = 200) -> None:
    data = datasets.create(
        "bbc-known-item", {"split": "all", "max_docs": max_docs, "candidates": 0}
    )
    task = tasks.create("ranking")
    first = models.create("minilm")
    times, mrr = [], []
    for label, ranker in (("first run", first), ("same ranker", first), ("new ranker", None)):
        r = ranker or models.create("minilm")
        r.encoded = 0
        t = time.perf_counter()
        ev = task.evaluate(r, data.x, data.y)
        times.append(time.perf_counter() - t)
        mrr.append(float(ev.correct.mean()))
        print(f"{label:12s} {times[-1]:7.2f} s  texts encoded {r.encoded:5d}  MRR@10 {mrr[-1]:.3f}")
    assert len(set(round(m, 6) for m in mrr)) == 1
    print(
        f"corpus {len(data.x[0]['docs'])} docs, {len(data)} queries; cached run "
        f"{times[0] / times[2]:.1f}x faster (disk), {times[0] / times[1]:.1f}x (memory)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
