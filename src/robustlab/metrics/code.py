"""Code-generation metrics from records (ReCode, S2): pass@k and robust pass/drop/relative@k.

Records of a ``code-generation`` run carry ``x.n`` (samples) and ``x.passes`` per example; the
``clean`` probe is the nominal prompt and each perturbation level is one of the ``s`` variants.
:func:`recode_table` turns them into one row per (model, transformation) and per (model, family)
with pass@k, Robust Pass_s@k, Robust Drop_s@k and Robust Relative_s@k in both definitions (the
paper's, and ReCode's released code's; see :mod:`robustlab.code.passk`).

Example::

    recode_table(store.records(run_id), k=1)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlab.code.passk import change_counts, mean_pass_at_k, robust_drop_at_k
from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric


def _pass1(df: pd.DataFrame) -> np.ndarray:
    if "x.passes" not in df or "x.n" not in df:
        return np.full(len(df), np.nan)
    v = pd.to_numeric(df["x.passes"], errors="coerce") / pd.to_numeric(df["x.n"], errors="coerce")
    return v.fillna(0.0).to_numpy(dtype=float)


pass_at_1 = metrics.register("pass_at_1")(
    Metric(
        "pass_at_1",
        lambda df: _pass1(df).mean(),
        True,
        _pass1,
        doc="Unbiased pass@1 of generated code (passing samples / samples), per problem.",
    )
)


def _masks(d: pd.DataFrame) -> pd.Series:
    """Per-record sample outcomes (bool arrays, generation order), None where unknown.

    Records carry ``x.pass_mask`` (one ``0``/``1`` per sample); with a single sample the count
    ``x.passes`` is the outcome itself. Records of ``n > 1`` without a mask (stored before masks
    existed) cannot be paired per sample, so their robust metrics are NaN rather than a guess."""
    n = pd.to_numeric(d["x.n"], errors="coerce")
    passes = pd.to_numeric(d["x.passes"], errors="coerce").fillna(0)
    mask = d["x.pass_mask"] if "x.pass_mask" in d else pd.Series(None, index=d.index, dtype=object)
    out = []
    for m, k, c in zip(mask, n, passes, strict=True):
        if isinstance(m, str) and m and len(m) == k and set(m) <= {"0", "1"}:
            out.append(np.frombuffer(m.encode(), dtype=np.uint8) == ord("1"))
        elif k >= 1 and c in (0, k):  # none or all passed (incl. errored records): known anyway
            out.append(np.full(int(k), c == k))
        else:
            out.append(None)
    return pd.Series(out, index=d.index, dtype=object)


def _robust(nom: pd.DataFrame, var: pd.DataFrame, k: int) -> dict[str, float]:
    """ReCode metrics of one transformation (or family): variants are the distinct ``level``s.

    A missing or errored variant counts as failed for every sample (worst case)."""
    d = nom.drop_duplicates(["example_id"]).set_index("example_id")
    ids = d.index
    n = pd.to_numeric(d["x.n"]).astype(int).to_numpy()
    c = pd.to_numeric(d["x.passes"]).fillna(0).astype(int).to_numpy()
    nominal = mean_pass_at_k(n.tolist(), c.tolist(), k)
    levels = sorted(var["level"].unique(), key=str)
    v = var.drop_duplicates(["example_id", "level"]).copy()
    v["_m"] = _masks(v)
    cell = v.set_index(["example_id", "level"])["_m"]
    nom_m = _masks(d)
    rows: dict[str, list[int]] = {key: [] for key in ("rc", "minus", "plus", "xor")}
    exact = True
    for j, ex in enumerate(ids):
        nm = nom_m[ex]
        # a variant not run for this problem fails every sample; a stored one without per-sample
        # outcomes (n > 1, no mask, 0 < passes < n) makes the metrics not computable
        vm = [cell[(ex, lv)] if (ex, lv) in cell.index else np.zeros(n[j], bool) for lv in levels]
        if nm is None or any(m is None or len(m) != n[j] for m in [nm, *vm]):
            exact = False
            break
        full = np.stack(vm)[None]  # [1, s, n]
        rows["rc"].append(int(full[0].all(axis=0).sum()))
        minus, plus = change_counts(nm[None], full, "paper")
        rows["minus"].append(int(minus[0]))
        rows["plus"].append(int(plus[0]))
        rows["xor"].append(int(change_counts(nm[None], full, "released")[0][0]))
    nan = float("nan")
    if exact:
        nl = n.tolist()
        robust = mean_pass_at_k(nl, rows["rc"], k)
        rel = mean_pass_at_k(nl, rows["minus"], k) + mean_pass_at_k(nl, rows["plus"], k)
        rel_released = mean_pass_at_k(nl, rows["xor"], k)
    else:
        robust = rel = rel_released = nan
    return {
        "pass@k": nominal,
        "robust_pass@k": robust,
        "robust_drop@k": robust_drop_at_k(nominal, robust) if exact else nan,
        "robust_relative@k": rel,
        "robust_relative_released@k": rel_released,
        "variants": len(levels),
        "problems": len(ids),
    }


def recode_table(df: pd.DataFrame, k: int = 1) -> pd.DataFrame:
    """ReCode metrics per (model, transformation) and per (model, family: worst over its members).

    Rows: model, group ("transformation" or "family"), name, family, pass@k, robust_pass@k,
    robust_drop@k, robust_relative@k (the paper's RC⁻ + RC⁺), robust_relative_released@k (ReCode's
    released code: nominal XOR all-variants-pass), variants, problems. With ``n > 1`` samples the
    worst case is taken per sample (``x.pass_mask``), then the unbiased estimator
    (:mod:`robustlab.code.passk`). Empty when the run has no code records.
    """
    need = {"x.passes", "x.n", "kind", "probe", "level", "example_id"}
    if df.empty or not need <= set(df.columns):
        return pd.DataFrame()
    rows = []
    for model, dm in df.groupby("model"):
        nom = dm[dm["kind"] == "clean"]
        pert = dm[dm["kind"] == "perturbation"]
        if nom.empty or pert.empty:
            continue
        fam_of = pert.groupby("probe")["x.family"].first() if "x.family" in pert else None
        for probe, dp in pert.groupby("probe"):
            fam = str(fam_of[probe]) if fam_of is not None else "other"
            rows.append(
                {
                    "model": model,
                    "group": "transformation",
                    "name": probe,
                    "family": fam,
                    **_robust(nom, dp, k),
                }
            )
        if fam_of is not None:
            for fam, members in fam_of.groupby(fam_of):
                dp = pert[pert["probe"].isin(members.index)].copy()
                dp["level"] = dp["probe"] + "#" + dp["level"].astype(str)
                rows.append(
                    {
                        "model": model,
                        "group": "family",
                        "name": fam,
                        "family": fam,
                        **_robust(nom, dp, k),
                    }
                )
    return pd.DataFrame(rows)
