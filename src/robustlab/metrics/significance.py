"""Significance of differences between two runs: permutation p-values and false-discovery control.

``compare`` tests many (probe, level, metric) groups at once; flagging every group whose bootstrap
CI excludes 0 flags ~5 % of them by chance, so two runs of one model that differ only in the suite
seed (noise draws) showed "better" probes. Each group gets an exact-in-distribution permutation
p-value (paired: random sign flips of the per-example differences, the test of "A and B are
exchangeable per example"; unpaired: random relabelling of the pooled values), and the family of
all groups is controlled by Benjamini-Hochberg (1995) at level ``alpha``: the expected share of
false discoveries among the flagged groups is at most ``alpha``.

Example::

    p = permutation_pvalue(a, b, paired=True)      # two-sided, (1 + #{|T*| >= |T|}) / (1 + n_perm)
    q = benjamini_hochberg([0.001, 0.02, 0.4])     # adjusted p-values; flag where q <= alpha
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK = 2_000_000  # values per resampling block (bounded memory)


def permutation_pvalue(
    a: np.ndarray, b: np.ndarray, paired: bool = True, n_perm: int = 10_000, seed: int = 0
) -> float:
    """Two-sided permutation p-value of ``mean(b) - mean(a)`` (NaNs dropped), vectorised.

    ``paired``: ``a[i]`` and ``b[i]`` belong to one example; the per-example differences get random
    signs. Otherwise the pooled values are relabelled at random. The ``+ 1`` in numerator and
    denominator makes the p-value valid (never 0) with a finite number of permutations.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if paired:
        d = b - a
        d = d[~np.isnan(d)]
        if not len(d):
            return float("nan")
        d = d[d != 0]  # zero differences do not change under a sign flip
        if not len(d):
            return 1.0
        t = abs(d.mean())
        hits, per = 0, max(1, _CHUNK // len(d))
        for i in range(0, n_perm, per):
            signs = rng.integers(0, 2, size=(min(per, n_perm - i), len(d)), dtype=np.int8) * 2 - 1
            hits += int((np.abs(signs @ d) >= t * len(d) * (1 - 1e-12)).sum())
        return (1 + hits) / (1 + n_perm)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return float("nan")
    pooled, na = np.concatenate([a, b]), len(a)
    t = abs(b.mean() - a.mean())
    if t == 0:
        return 1.0
    hits, per = 0, max(1, _CHUNK // len(pooled))
    for i in range(0, n_perm, per):
        m = min(per, n_perm - i)
        perm = rng.permuted(np.broadcast_to(pooled, (m, len(pooled))), axis=1)
        diff = perm[:, na:].mean(1) - perm[:, :na].mean(1)
        hits += int((np.abs(diff) >= t * (1 - 1e-12)).sum())
    return (1 + hits) / (1 + n_perm)


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaNs stay NaN and do not count as tests."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if not m:
        return q
    ps = p[ok]
    order = np.argsort(ps, kind="stable")
    scaled = ps[order] * m / np.arange(1, m + 1)
    adj = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adj
    q[ok] = out
    return q
