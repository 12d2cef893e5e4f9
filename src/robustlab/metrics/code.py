"""Code-generation metrics from records (ReCode, S2): pass@k and robust pass/drop/relative@k.

Records of a ``code-generation`` run carry ``x.n`` (samples) and ``x.passes`` per example; the
``clean`` probe is the nominal prompt and each perturbation level is one of the ``s`` variants.
:func:`recode_table` turns them into one row per (model, transformation) and per (model, family)
with pass@k, Robust Pass_s@k, Robust Drop_s@k and Robust Relative_s@k (definitions in
:mod:`robustlab.code.passk`).

Example::

    recode_table(store.records(run_id), k=1)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlab.code.passk import mean_pass_at_k, robust_drop_at_k, robust_relative_at_k
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


def _counts(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    d = df.drop_duplicates(["example_id"]).set_index("example_id")
    return pd.to_numeric(d["x.n"]).astype(int), pd.to_numeric(d["x.passes"]).fillna(0).astype(int)


def _robust(nom: pd.DataFrame, var: pd.DataFrame, k: int) -> dict[str, float]:
    n, c = _counts(nom)
    ids = n.index
    piv = var.pivot_table(index="example_id", columns="level", values="x.passes", aggfunc="first")
    piv = piv.reindex(ids)
    nn = n.to_numpy()
    if k > 1 and (nn > 1).any():  # sampling: per-variant passes; worst case = fewest passes
        rc = piv.min(axis=1).fillna(0).astype(int).to_numpy()
    else:
        rc = (piv.fillna(0).to_numpy() >= nn[:, None]).all(axis=1).astype(int) * nn
    nominal = mean_pass_at_k(nn.tolist(), c.tolist(), k)
    robust = mean_pass_at_k(nn.tolist(), rc.tolist(), k)
    var_ok = piv.fillna(0).to_numpy() >= nn[:, None]
    return {
        "pass@k": nominal,
        "robust_pass@k": robust,
        "robust_drop@k": robust_drop_at_k(nominal, robust),
        "robust_relative@k": robust_relative_at_k((c.to_numpy() >= nn), var_ok),
        "variants": int(piv.shape[1]),
        "problems": len(ids),
    }


def recode_table(df: pd.DataFrame, k: int = 1) -> pd.DataFrame:
    """ReCode metrics per (model, transformation) and per (model, family: worst over its members).

    Rows: model, group ("transformation" or "family"), name, family, pass@k, robust_pass@k,
    robust_drop@k, robust_relative@k, variants, problems. Empty when the run has no code records.
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
