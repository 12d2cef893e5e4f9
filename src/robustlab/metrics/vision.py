"""Vision robustness metrics: pure functions of records (:func:`robustlab.core.records.frame`
layout) or of plain arrays.

* :func:`accuracy_curve` -- accuracy per (model, probe, level): accuracy vs epsilon / severity.
* :func:`power_law_fit` / :func:`adversarial_error_power_law` -- adversarial error ``~ A eps^b``
  fitted in log-log space, with exponent and R^2 (Cubuk et al., 2018, S34).
* :func:`logit_difference_stats` -- statistics of ``z_y - z_j`` (S34: their distribution sets the
  power law).
* :func:`median_min_perturbation` -- median minimal adversarial distance (failures count as inf).
* :func:`corruption_errors`, :func:`mce` -- error per corruption and severity; mCE and relative mCE
  against a baseline model (Hendrycks & Dietterich, 2019).
* :func:`relative_drop`, :func:`effective_robustness` -- relative performance drop and the residual
  of OOD accuracy from the linear (optionally logit-scaled) trend of OOD vs ID accuracy over models
  (Taori et al., 2020; S19/S25).
* :func:`oracle_agreement` -- agreement with a reference model's predictions on the same perturbed
  inputs (S4).

Example::

    df = frame(store.records(run_id))
    fit = adversarial_error_power_law(df[df.probe == "pgd"])   # {"exponent": ..., "r2": ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.core.registry import metrics
from robustlab.metrics.base import Metric


def _correct(df: pd.DataFrame) -> pd.Series:
    return df["correct"].fillna(0.0).astype(float)


def accuracy_curve(
    df: pd.DataFrame, by: Sequence[str] = ("model", "probe", "level")
) -> pd.DataFrame:
    """Accuracy and n per group (failed examples count as wrong), sorted by level."""
    g = df.assign(_c=_correct(df)).groupby(list(by), sort=True)["_c"]
    return g.agg(accuracy="mean", n="size").reset_index()


def power_law_fit(eps: Sequence[float], err: Sequence[float]) -> dict[str, float]:
    """Least-squares fit of ``log err = log A + b log eps`` over points with ``eps, err > 0``.

    Returns ``exponent`` (b), ``coef`` (A), ``r2`` (of the log-log fit) and ``n`` (points used).
    """
    e, r = np.asarray(eps, dtype=float), np.asarray(err, dtype=float)
    keep = (e > 0) & (r > 0) & np.isfinite(e) & np.isfinite(r)
    if keep.sum() < 2:
        raise ConfigError("power-law fit needs at least 2 points with eps > 0 and error > 0")
    lx, ly = np.log(e[keep]), np.log(r[keep])
    b, a = np.polyfit(lx, ly, 1)
    resid = ly - (a + b * lx)
    ss = ((ly - ly.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / ss if ss > 0 else 1.0
    return {"exponent": float(b), "coef": float(np.exp(a)), "r2": float(r2), "n": int(keep.sum())}


def adversarial_error_power_law(df: pd.DataFrame) -> dict[str, float]:
    """Power law of adversarial error vs epsilon over one attack's records (all levels).

    Adversarial error at a level is the attack success rate on clean-correct examples when the
    records carry ``x.success``/``x.clean_correct``, else 1 - accuracy.
    """
    if "x.success" in df and "x.clean_correct" in df:
        sub = df[df["x.clean_correct"] == 1]
        err = sub.groupby("level")["x.success"].mean()
    else:
        err = 1.0 - df.assign(_c=_correct(df)).groupby("level")["_c"].mean()
    return power_law_fit(err.index.to_numpy(dtype=float), err.to_numpy(dtype=float))


def logit_difference_stats(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Statistics of logit differences ``z_y - z_j`` (j != y) and of the margin ``min_j``.

    ``logits`` ``[N, K]`` and labels ``y`` ``[N]``; returns mean, std and quartiles of all
    differences and of the per-example margin, and the fraction of negative margins (errors).
    """
    z, y = np.asarray(logits, dtype=float), np.asarray(y, dtype=int)
    if z.ndim != 2 or len(z) != len(y) or z.shape[1] < 2:
        raise ConfigError(
            f"logit_difference_stats needs [N, K>=2] logits and N labels, got {z.shape}"
        )
    zy = z[np.arange(len(z)), y][:, None]
    other = np.ones_like(z, dtype=bool)
    other[np.arange(len(z)), y] = False
    diff = (zy - z)[other].reshape(len(z), -1)
    margin = diff.min(axis=1)
    out: dict[str, float] = {}
    for name, v in (("diff", diff.ravel()), ("margin", margin)):
        q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        out |= {f"{name}_mean": float(v.mean()), f"{name}_std": float(v.std()),
                f"{name}_q1": float(q1), f"{name}_median": float(med), f"{name}_q3": float(q3)}  # fmt: skip
    out["frac_negative_margin"] = float((margin < 0).mean())
    return out


def _min_dist(df: pd.DataFrame) -> np.ndarray:
    d = df["x.distance"].to_numpy(dtype=float).copy()
    d[df["x.success"].to_numpy(dtype=float) != 1] = np.inf
    if "x.clean_correct" in df:
        d[df["x.clean_correct"].to_numpy(dtype=float) != 1] = 0.0
    return d


def median_min_perturbation(df: pd.DataFrame) -> float:
    """Median minimal perturbation of a minimum-norm attack: distance of successful examples,
    ``inf`` where the attack failed, 0 where the clean input is already misclassified."""
    return float(np.median(_min_dist(df))) if len(df) else float("nan")


metrics.register("median_min_perturbation")(
    Metric("median_min_perturbation", median_min_perturbation, higher_is_better=True,
           doc="Median minimal adversarial distance; failures count as inf, clean errors as 0.")
)  # fmt: skip


def corruption_errors(df: pd.DataFrame) -> pd.DataFrame:
    """Error per (model, corruption, severity) over perturbation records."""
    sub = df[df["kind"] == "perturbation"]
    cur = accuracy_curve(sub, ("model", "probe", "level"))
    return cur.assign(error=1.0 - cur["accuracy"]).drop(columns="accuracy")


def _clean_error(df: pd.DataFrame) -> float:
    return float(1.0 - _correct(df[df["kind"] == "clean"]).mean())


def mce(df: pd.DataFrame, baseline: pd.DataFrame) -> dict[str, object]:
    """mCE and relative mCE of the model in ``df`` against the ``baseline`` model's records.

    ``CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}``; relative: ``sum_s (E_{s,c} - E_clean) /
    sum_s (E^base_{s,c} - E^base_clean)``; both averaged over corruptions c held by both.
    """
    e, b = corruption_errors(df), corruption_errors(baseline)
    m = e.merge(b, on=["probe", "level"], suffixes=("", "_base"))
    if m.empty:
        raise ConfigError("mce: no (corruption, severity) pairs shared with the baseline records")
    ec, bc = _clean_error(df), _clean_error(baseline)
    per = m.groupby("probe").apply(
        lambda g: pd.Series({"ce": g["error"].sum() / g["error_base"].sum(),
                             "rel_ce": (g["error"] - ec).sum() / (g["error_base"] - bc).sum()}),
        include_groups=False,
    )  # fmt: skip
    return {"mce": float(per["ce"].mean()), "relative_mce": float(per["rel_ce"].mean()),
            "per_corruption": per}  # fmt: skip


def relative_drop(acc_id: float, acc_ood: float) -> float:
    """Relative performance drop ``(acc_id - acc_ood) / acc_id``."""
    if acc_id <= 0:
        raise ConfigError(f"relative_drop needs a positive in-distribution accuracy, got {acc_id}")
    return (acc_id - acc_ood) / acc_id


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def effective_robustness(
    id_acc: Sequence[float], ood_acc: Sequence[float], scale: str = "logit"
) -> dict[str, object]:
    """Linear fit of OOD vs ID accuracy over models (``scale`` ``logit`` or ``linear``) and each
    model's effective robustness ``ood - fitted(id)`` in accuracy units."""
    i, o = np.asarray(id_acc, dtype=float), np.asarray(ood_acc, dtype=float)
    if len(i) != len(o) or len(i) < 2:
        raise ConfigError("effective_robustness needs >= 2 models with ID and OOD accuracies")
    if scale not in ("logit", "linear"):
        raise ConfigError(f"scale must be 'logit' or 'linear', got {scale!r}")
    f = _logit if scale == "logit" else (lambda v: v)
    slope, icept = np.polyfit(f(i), f(o), 1)
    pred = slope * f(i) + icept
    fitted = 1 / (1 + np.exp(-pred)) if scale == "logit" else pred
    return {"slope": float(slope), "intercept": float(icept), "effective_robustness": o - fitted,
            "relative_drop": (i - o) / i}  # fmt: skip


def oracle_agreement(df: pd.DataFrame, oracle: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (probe, level): share of examples where the model's prediction equals the reference
    (oracle) model's prediction on the same perturbed input, and n. Without ``oracle`` records,
    the oracle's predictions come from the records' own ``x.oracle_pred`` column (written by the
    ``oracle-bounded`` attack, :mod:`robustlab.attacks.oracle_bounded`)."""
    keys = ["probe", "level", "example_id"]
    if oracle is None:
        if "x.oracle_pred" not in df:
            raise ConfigError("oracle_agreement: no oracle records and no x.oracle_pred column")
        from robustlab.core.records import dumps

        op = pd.to_numeric(df["x.oracle_pred"], errors="coerce")  # pred is JSON text
        oracle = df[keys].assign(pred=[None if v != v else dumps(int(v)) for v in op])
    m = df[[*keys, "pred"]].merge(oracle[[*keys, "pred"]], on=keys, suffixes=("", "_oracle"))
    m = m.assign(agree=(m["pred"] == m["pred_oracle"]) & m["pred"].notna())
    return m.groupby(["probe", "level"])["agree"].agg(agreement="mean", n="size").reset_index()
