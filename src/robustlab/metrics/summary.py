"""Summaries of records: metric values with bootstrap CIs per group, spread across replicates, and
differences between two runs (with false-discovery control)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.core.registry import metrics
from robustlab.metrics.base import bootstrap_ci, paired_bootstrap_diff
from robustlab.metrics.significance import benjamini_hochberg, permutation_pvalue

GROUP = ("model", "kind", "probe", "level")
SUMMARY_COLUMNS = ["metric", "value", "ci_lo", "ci_hi", "n", "replicate_std"]
_ALPHA = 0.05
# Groups up to this many examples are resampled with the exact draws of ``bootstrap_ci`` (one index
# matrix per distinct group size, shared by every group of that size: each group's generator starts
# from ``seed``). Larger groups whose values take few distinct values (0/1 correctness, integer
# query counts) draw the resample counts of each distinct value from their multinomial instead:
# the same bootstrap distribution, exactly, at O(n_boot x distinct values) instead of
# O(n_boot x n) -- what keeps a 1M-record report in seconds.
EXACT_DRAWS_MAX_N = 2_000
_INDEX_CHUNK = 4_000_000  # resample indices per block, as in metrics.base._boot_means


def summarize(
    df: pd.DataFrame,
    names: Sequence[str] = ("accuracy",),
    by: Sequence[str] = GROUP,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per group and metric: value, 95% bootstrap CI over examples, n.

    Replicates (training seeds) are pooled for the value and CI; ``replicate_std`` is the standard
    deviation of the per-replicate values (NaN with a single replicate).

    One pass over the records: one stable sort by group (and one by group and replicate), then each
    group is a contiguous slice in its original row order, so every metric sees exactly the rows (in
    the order) a per-group ``groupby`` loop gives it. Metrics with a sliced form
    (``Metric.sliced``: the core metrics accuracy, error and failure rate, attack success rate,
    mean queries, median distance) are evaluated on those slices of column arrays computed once for
    the whole frame; other metrics get the slice as a DataFrame.
    Bootstrap CIs are computed for all groups at once (see :func:`bootstrap_cis`): equal to
    :func:`bootstrap_ci` per group up to :data:`EXACT_DRAWS_MAX_N` examples.
    """
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    gb = df.groupby(by, sort=True, dropna=False)
    ids = gb.ngroup().to_numpy()
    keys = [k if isinstance(k, tuple) else (k,) for k in gb.size().index]
    order = np.argsort(ids, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=len(keys)))])
    reps = _replicate_slices(df, by, ids, len(keys)) if "replicate" in df else None
    ms = [metrics.get(name) for name in names]
    # only the columns a core metric reads are reordered (not the record's text columns)
    needed = [c for m in ms if m.sliced is not None for c in m.columns if c in df]
    narrow = df[list(dict.fromkeys(needed))]
    fasts = [m.sliced(narrow.iloc[order]) if m.sliced is not None else None for m in ms]
    rep_fasts = [
        m.sliced(narrow.iloc[reps[0]]) if reps is not None and m.sliced is not None else None
        for m in ms
    ]
    slow = any(f is None for f in fasts)
    data = df.iloc[order] if slow else None
    by_rep = df.iloc[reps[0]] if slow and reps is not None else None
    rows, pending = [], []
    for i, key in enumerate(keys):
        a, b = int(bounds[i]), int(bounds[i + 1])
        g = None
        for name, m, fast, rep_fast in zip(names, ms, fasts, rep_fasts, strict=True):
            if fast is not None:
                value, per_example = fast(a, b)
            else:
                assert data is not None
                g = data.iloc[a:b] if g is None else g
                value = m(g)
                per_example = m.per_example(g) if m.per_example is not None else None
            if per_example is not None:
                pending.append((len(rows), per_example))
            per_rep = []
            if reps is not None:
                spans = reps[1][i]
                if rep_fast is not None:
                    per_rep = [rep_fast(x, y)[0] for x, y in spans]
                else:
                    assert by_rep is not None
                    per_rep = [m(by_rep.iloc[x:y]) for x, y in spans]
            std = float(np.std(per_rep, ddof=1)) if len(per_rep) > 1 else float("nan")
            rows.append(
                {**dict(zip(by, key, strict=True)), "metric": name, "value": value,
                 "ci_lo": float("nan"), "ci_hi": float("nan"), "n": b - a, "replicate_std": std}
            )  # fmt: skip
    cis = bootstrap_cis([v for _, v in pending], n_boot=n_boot, seed=seed)
    for (r, _), (lo, hi) in zip(pending, cis, strict=True):
        rows[r]["ci_lo"], rows[r]["ci_hi"] = lo, hi
    return pd.DataFrame(rows, columns=[*by, *SUMMARY_COLUMNS])


def summarize_per_group(
    df: pd.DataFrame,
    names: Sequence[str] = ("accuracy",),
    by: Sequence[str] = GROUP,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The definition :func:`summarize` computes in one pass: a loop over the groups calling each
    metric and :func:`~robustlab.metrics.base.bootstrap_ci` per group (how ``summarize`` worked
    before issue 22). Slow; kept as the reference the tests and ``benchmarks/report_scaling.py``
    compare ``summarize`` with (equal bit for bit on groups of up to ``EXACT_DRAWS_MAX_N``)."""
    rows = []
    if df.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for name in names:
            m = metrics.get(name)
            value = m(g)
            if m.per_example is not None:
                lo, hi = bootstrap_ci(m.per_example(g), n_boot=n_boot, seed=seed)
            else:
                lo = hi = float("nan")
            per_rep = [m(r) for _, r in g.groupby("replicate")] if "replicate" in g else []
            std = float(np.std(per_rep, ddof=1)) if len(per_rep) > 1 else float("nan")
            rows.append(
                {**dict(zip(by, key, strict=True)), "metric": name, "value": value,
                 "ci_lo": lo, "ci_hi": hi, "n": int(len(g)), "replicate_std": std}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _replicate_slices(
    df: pd.DataFrame, by: list[str], ids: np.ndarray, n_groups: int
) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """Row order sorting by (group, replicate), stably, and per group the ``(start, stop)`` of each
    replicate in that order (replicates ascending: the order of ``g.groupby("replicate")``)."""
    rep_codes, rep_values = pd.factorize(df["replicate"], sort=True)
    rows = np.flatnonzero(rep_codes >= 0)  # a missing replicate is in no block (groupby drops it)
    sub_ids = ids[rows].astype(np.int64) * max(1, len(rep_values)) + rep_codes[rows]
    order = rows[np.argsort(sub_ids, kind="stable")]
    _, sizes = np.unique(sub_ids, return_counts=True)  # (group, replicate) blocks, ascending
    stops = np.cumsum(sizes)
    starts = stops - sizes
    owner = ids[order][starts]  # the group of each (group, replicate) block
    spans: list[list[tuple[int, int]]] = [[] for _ in range(n_groups)]
    for g, a, b in zip(owner.tolist(), starts.tolist(), stops.tolist(), strict=True):
        spans[g].append((a, b))
    return order, spans


def bootstrap_cis(
    values: Sequence[np.ndarray], n_boot: int = 1000, alpha: float = _ALPHA, seed: int = 0
) -> list[tuple[float, float]]:
    """Percentile bootstrap CIs of the means of many samples at once (NaNs dropped in each).

    Each sample gets the CI :func:`robustlab.metrics.base.bootstrap_ci` gives it (its generator
    starts from ``seed``), computed for all samples together: samples of equal length share one
    resample index matrix, and the resample means of integer-valued samples (0/1 correctness,
    counts) are one matrix product of the resample counts with the samples -- exact, as sums of
    integers are. Samples longer than :data:`EXACT_DRAWS_MAX_N` with few distinct values draw their
    resample counts per distinct value from the multinomial (the same bootstrap distribution).
    """
    out: list[tuple[float, float]] = [(float("nan"), float("nan"))] * len(values)
    clean = [np.asarray(v, dtype=np.float64) for v in values]
    clean = [v[~np.isnan(v)] for v in clean]
    by_n: dict[int, list[int]] = {}
    q = [alpha / 2, 1 - alpha / 2]
    for i, v in enumerate(clean):
        n = len(v)
        if not n:
            continue
        if n > EXACT_DRAWS_MAX_N:
            uniq, counts = np.unique(v, return_counts=True)
            if len(uniq) <= n // 8:
                rng = np.random.default_rng(seed)
                draws = rng.multinomial(n, counts / n, size=n_boot)
                lo, hi = np.quantile((draws @ uniq) / n, q)
                out[i] = (float(lo), float(hi))
                continue
        by_n.setdefault(n, []).append(i)
    for n, members in by_n.items():
        means = _resample_means(n, [clean[i] for i in members], n_boot, seed)
        lohi = np.quantile(means, q, axis=0)
        for j, i in enumerate(members):
            out[i] = (float(lohi[0, j]), float(lohi[1, j]))
    return out


def _resample_means(n: int, samples: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, len(samples))`` resample means, drawing the resample indices exactly as
    ``bootstrap_ci`` does for one sample of length ``n`` (same generator, same blocks)."""
    rng = np.random.default_rng(seed)
    per = max(1, _INDEX_CHUNK // n)
    stack = np.stack(samples)  # (groups, n)
    # integer values whose resample sums stay below 2**53: every sum is exact in any order
    exact = bool(np.all(stack == np.round(stack)) and np.abs(stack).max() * n < 2.0**53)
    out = np.empty((n_boot, len(samples)))
    for i in range(0, n_boot, per):
        idx = rng.integers(0, n, size=(min(per, n_boot - i), n))
        r = len(idx)
        if exact:  # counts of each example in each resample, times the values: exact sums
            flat = (idx + (np.arange(r) * n)[:, None]).ravel()
            counts = np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)
            out[i : i + r] = (counts @ stack.T) / n
        else:  # the same gather-and-mean as bootstrap_ci, per sample
            for j, v in enumerate(samples):
                out[i : i + r, j] = v[idx].mean(axis=1)
    return out


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    names: Sequence[str] = ("accuracy",),
    by: Sequence[str] = ("kind", "probe", "level"),
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_perm: int = 10_000,
) -> pd.DataFrame:
    """Differences ``B - A`` per group and metric: 95% bootstrap CIs, permutation p-values and
    Benjamini-Hochberg false-discovery control over all compared groups.

    Where both runs hold the same examples (matched on replicate and example id) the bootstrap and
    the permutation test are paired (sign flips of the per-example differences), which gives much
    tighter intervals for model-version comparisons on one suite. ``significant`` is ``q <= alpha``
    with ``q`` the BH-adjusted p-value over every row with a p-value (all groups and metrics of
    the comparison: the family), so comparing many probes does not flag ~5 % of them by chance.
    Groups present in only one run have ``status`` "missing in A" / "missing in B" (no test).
    Runs holding the same models are compared model by model; two runs of one model each (e.g.
    successive versions under different labels) are compared with each other.
    """
    ma, mb = set(a["model"]) if len(a) else set(), set(b["model"]) if len(b) else set()
    if "model" not in by and len(ma | mb) > 1:
        if ma == mb:
            by = ("model", *by)
        elif len(ma) > 1 or len(mb) > 1:
            raise ConfigError(
                f"the runs hold different models ({', '.join(sorted(ma))} vs "
                f"{', '.join(sorted(mb))}): compare runs of the same models, or of one model each"
            )
    rows = []
    ka = set(map(tuple, a[list(by)].drop_duplicates().values.tolist())) if len(a) else set()
    kb = set(map(tuple, b[list(by)].drop_duplicates().values.tolist())) if len(b) else set()
    for key in sorted(ka | kb, key=str):
        status = (
            "ok" if key in ka and key in kb else ("missing in B" if key in ka else "missing in A")
        )
        ga = a[(a[list(by)] == pd.Series(key, index=list(by))).all(axis=1)] if key in ka else a[:0]
        gb = b[(b[list(by)] == pd.Series(key, index=list(by))).all(axis=1)] if key in kb else b[:0]
        for name in names:
            m = metrics.get(name)
            va, vb = m(ga), m(gb)
            diff, lo, hi, p = float(vb - va), float("nan"), float("nan"), float("nan")
            if m.per_example is not None and len(ga) and len(gb):
                ja = ga.set_index(["replicate", "example_id"]).sort_index()
                jb = gb.set_index(["replicate", "example_id"]).sort_index()
                paired = ja.index.equals(jb.index)
                pa, pb = m.per_example(ja.reset_index()), m.per_example(jb.reset_index())
                paired = paired and len(pa) == len(pb)
                _, lo, hi = paired_bootstrap_diff(pa, pb, paired, n_boot=n_boot, seed=seed)
                p = permutation_pvalue(pa, pb, paired, n_perm=n_perm, seed=seed)
            rows.append(
                {**dict(zip(by, key, strict=True)), "metric": name, "a": va, "b": vb,
                 "diff": diff, "ci_lo": lo, "ci_hi": hi, "p_value": p, "status": status,
                 "higher_is_better": m.higher_is_better}
            )  # fmt: skip
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["q_value"] = benjamini_hochberg(out["p_value"].to_numpy())
    out["significant"] = (out["q_value"] <= alpha).to_numpy()
    return out
