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
    """
    rows = []
    if df.empty:
        return pd.DataFrame(
            columns=[*by, "metric", "value", "ci_lo", "ci_hi", "n", "replicate_std"]
        )
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
