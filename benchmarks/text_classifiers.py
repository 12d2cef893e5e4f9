"""Text classifiers' costs, measured side by side in one run (wall-clock, best of ``--reps``).

1. ``tfidf-logreg`` fit on the BBC training split with BLAS/OpenMP threads limited to 1 (what the
   model factory does) vs the library default -- the ratio shows the oversubscription cost on a
   small, shared machine;
2. ``minilm-logreg`` scoring of BBC test texts: fresh texts (encoder runs) vs texts already seen
   (the classifier's embedding cache; attacks score the same texts again), and ``tfidf-logreg``.

    .venv/bin/python benchmarks/text_classifiers.py [--n 64] [--reps 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from robustlab.core.registry import datasets, models


def best(fn: Callable[[], object], reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="test texts scored")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    train = datasets.create("bbc-news", {"split": "train"})

    def fit() -> None:
        make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2),
                      LogisticRegression(C=10, solver="newton-cg")).fit(train.x, train.y.numpy())  # fmt: skip

    def fit_one() -> None:
        with threadpool_limits(1):
            fit()

    t_default, t_one = best(fit, a.reps), best(fit_one, a.reps)
    print(f"tfidf-logreg fit ({len(train)} articles): default threads {t_default:.3f}s, "
          f"1 thread {t_one:.3f}s, ratio {t_default / t_one:.1f}x")  # fmt: skip

    test = datasets.create("bbc-news", {"limit": a.n, "max_words": 64}).x
    mini = models.create("minilm-logreg")
    tfidf = models.create("tfidf-logreg")

    def fresh() -> None:
        mini._cache.clear()
        mini.logits(test)

    t_fresh = best(fresh, a.reps)
    mini.logits(test)
    t_cached = best(lambda: mini.logits(test), a.reps)
    t_tfidf = best(lambda: tfidf.logits(test), a.reps)
    print(f"minilm-logreg, {a.n} texts of 64 words: fresh {a.n / t_fresh:.0f} texts/s, "
          f"cached {a.n / t_cached:.0f} texts/s ({t_fresh / t_cached:.0f}x); "
          f"tfidf-logreg {a.n / t_tfidf:.0f} texts/s ({t_fresh / t_tfidf:.0f}x minilm fresh)")  # fmt: skip


if __name__ == "__main__":
    main()
