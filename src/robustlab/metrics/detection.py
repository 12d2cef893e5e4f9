"""Detection metrics: AUROC, AUPR (average precision) and FPR at a TPR, batched, sklearn's ties.

A detector gives each example a ``score``; ``is_positive`` marks the examples it should rank high.
All three metrics are threshold-free summaries of how well the scores separate the two classes
(Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples
in Neural Networks"; Liang et al. 2018 for FPR at 95% TPR):

* :func:`auroc`: area under the ROC curve, the probability that a random positive scores higher
  than a random negative, ties counting one half (``sklearn.metrics.roc_auc_score``).
* :func:`aupr`: **average precision** ``AP = sum_j (R_j - R_{j-1}) P_j`` over the distinct
  thresholds, as ``sklearn.metrics.average_precision_score`` (a step area, not the trapezoidal
  ``auc(recall, precision)`` pytorch-ood reports as AUPR). Which class is positive decides the name:
  with in-distribution (ID) examples positive and scores higher = more ID it is **AUPR-In**; with
  OOD examples positive and ``-scores`` it is **AUPR-Out**.
* :func:`fpr_at_tpr`: the false positive rate at the first threshold (scanning from the highest
  score down) whose true positive rate is at least ``tpr``, pytorch-ood's ``FPRAtTPR`` convention.
  With ID positive this is the usual "FPR95": the share of OOD examples still accepted when 95% of
  the ID examples are.

Examples with equal scores enter the curves at the same threshold, exactly like scikit-learn.
Every function takes ``scores`` of shape ``[N]`` or ``[R, N]`` (R rows scored at once, e.g.
bootstrap resamples or several detectors; no Python loop over rows or examples) and ``is_positive``
of shape ``[N]`` (shared by all rows) or the shape of ``scores``; it returns a float or an array
``[R]``.

Example::

    auroc([0.9, 0.8, 0.3, 0.1], [True, False, True, False])        # 0.75
    aupr([0.9, 0.8, 0.3, 0.1], [True, False, True, False])         # (1/1 + 2/3) / 2 = 0.8333
    fpr_at_tpr([0.9, 0.8, 0.3, 0.1], [True, False, True, False])   # 0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robustlab.core.errors import ConfigError

ArrayLike = Sequence[float] | np.ndarray | Any  # numpy arrays, torch tensors, lists


def _prepare(
    scores: ArrayLike, is_positive: ArrayLike, who: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    s = np.asarray(_numpy(scores), dtype=np.float64)
    p = np.asarray(_numpy(is_positive))
    if p.dtype != np.bool_:
        if not np.isin(p, (0, 1)).all():
            raise ConfigError(f"{who}: is_positive must be booleans (or 0/1), got other values")
        p = p.astype(bool)
    single = s.ndim == 1
    if s.ndim not in (1, 2):
        raise ConfigError(f"{who}: scores must have shape [N] or [R, N], got {list(s.shape)}")
    s = np.atleast_2d(s)
    if p.ndim == 1 and p.shape[0] == s.shape[1]:
        p = np.broadcast_to(p, s.shape)
    if p.shape != s.shape:
        raise ConfigError(
            f"{who}: is_positive has shape {list(p.shape)}, scores {list(s.shape)} (need [N] or "
            f"the scores' shape)"
        )
    if s.shape[1] == 0:
        raise ConfigError(f"{who}: no examples")
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise ConfigError(f"{who}: {n_nan} NaN scores (a detector on non-finite model outputs?)")
    n_pos = p.sum(axis=1)
    if ((n_pos == 0) | (n_pos == s.shape[1])).any():
        cls = "positive" if (n_pos == 0).any() else "negative"
        raise ConfigError(
            f"{who}: undefined with one class: no {cls} examples (need both positives and "
            f"negatives, e.g. ID and OOD, or correct and wrong predictions)"
        )
    return s, p, single


def _numpy(x: Any) -> Any:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    return x


def _sorted_counts(s: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row, in order of decreasing score: positive flags, cumulative true and false positive
    counts at the *end of each tie group* (the threshold an example enters at), the tie-group-end
    mask, and the class sizes."""
    order = np.argsort(-s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)
    pp = np.take_along_axis(p, order, axis=1)
    r, n = ss.shape
    last = np.ones((r, n), dtype=bool)
    last[:, :-1] = ss[:, 1:] != ss[:, :-1]
    # index of the end of each example's tie group: the next `last` position at or after it
    pos = np.where(last, np.arange(n), n)
    end = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1]
    tps = np.cumsum(pp, axis=1)
    tps_end = np.take_along_axis(tps, end, axis=1)
    fps_end = end + 1 - tps_end
    n_pos = tps[:, -1]
    n_neg = n - n_pos
    return pp, tps_end, fps_end, last, n_pos, n_neg


def _out(v: np.ndarray, single: bool) -> float | np.ndarray:
    return float(v[0]) if single else v


def auroc(scores: ArrayLike, is_positive: ArrayLike) -> float | np.ndarray:
    """Area under the ROC curve of ``scores`` for the ``is_positive`` class (ties count 1/2).

    Equal to ``sklearn.metrics.roc_auc_score(is_positive, scores)`` (tested), computed as the
    Mann-Whitney statistic with average ranks.

    Example: ``auroc([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == 0.75``.
    """
    s, p, single = _prepare(scores, is_positive, "auroc")
    from scipy.stats import rankdata

    ranks = rankdata(s, method="average", axis=1)
    n_pos = p.sum(axis=1).astype(np.float64)
    n_neg = s.shape[1] - n_pos
    u = (ranks * p).sum(axis=1) - n_pos * (n_pos + 1) / 2
    return _out(u / (n_pos * n_neg), single)


def aupr(scores: ArrayLike, is_positive: ArrayLike) -> float | np.ndarray:
    """Average precision of ``scores`` for the ``is_positive`` class (AUPR-In when the positives
    are the ID examples, AUPR-Out when they are the OOD examples and ``scores`` are negated).

    ``AP = sum_j (R_j - R_{j-1}) P_j`` over distinct thresholds, equal to
    ``sklearn.metrics.average_precision_score(is_positive, scores)`` (tested): each positive adds
    the precision at the threshold where its tie group enters, divided by the number of positives.

    Example: ``aupr([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == (1 + 2/3) / 2``.
    """
    s, p, single = _prepare(scores, is_positive, "aupr")
    pp, tps_end, fps_end, _, n_pos, _ = _sorted_counts(s, p)
    precision = tps_end / (tps_end + fps_end)
    return _out((precision * pp).sum(axis=1) / n_pos, single)


def fpr_at_tpr(scores: ArrayLike, is_positive: ArrayLike, tpr: float = 0.95) -> float | np.ndarray:
    """False positive rate at the first threshold (highest score first) where the true positive
    rate reaches ``tpr``: pytorch-ood's ``FPRAtTPR`` (tested equal). With ID examples positive
    and scores higher = more ID: the share of OOD examples accepted while ``tpr`` of the ID
    examples are (FPR95, Liang et al. 2018). Lower is better.

    Example: ``fpr_at_tpr([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == 0.5``.
    """
    if not (isinstance(tpr, int | float) and 0.0 <= float(tpr) <= 1.0):
        raise ConfigError(f"fpr_at_tpr: tpr must be a number in [0, 1], got {tpr!r}")
    s, p, single = _prepare(scores, is_positive, "fpr_at_tpr")
    _, tps_end, fps_end, last, n_pos, n_neg = _sorted_counts(s, p)
    rate = tps_end / n_pos[:, None]
    ok = last & (rate >= float(tpr))  # the last threshold has rate 1, so some threshold is ok
    first = ok.argmax(axis=1)
    fpr = np.take_along_axis(fps_end, first[:, None], axis=1)[:, 0] / n_neg
    if float(tpr) <= 0.0:  # the curve's first point (0, 0): nothing accepted
        fpr = np.zeros_like(fpr, dtype=np.float64)
    return _out(fpr.astype(np.float64), single)


def detection_metrics(
    scores: ArrayLike, is_positive: ArrayLike, tpr: float = 0.95
) -> dict[str, float | np.ndarray]:
    """``{"auroc", "aupr", "fpr_at_tpr"}`` of the same scores (see the functions)."""
    return {
        "auroc": auroc(scores, is_positive),
        "aupr": aupr(scores, is_positive),
        "fpr_at_tpr": fpr_at_tpr(scores, is_positive, tpr),
    }


def roc_curve(scores: ArrayLike, is_positive: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at every distinct threshold, from ``(0, 0)`` to ``(1, 1)`` (the points
    :func:`auroc` integrates; ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``)."""
    s, p, single = _prepare(scores, is_positive, "roc_curve")
    if not single:
        raise ConfigError("roc_curve: scores must have shape [N]")
    _, tps_end, fps_end, last, n_pos, n_neg = _sorted_counts(s, p)
    fpr = np.r_[0.0, fps_end[0][last[0]] / n_neg[0]]
    tpr = np.r_[0.0, tps_end[0][last[0]] / n_pos[0]]
    return fpr, tpr


def bootstrap_ci(
    metric: Any,
    scores: ArrayLike,
    is_positive: ArrayLike,
    n: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``metric(scores, is_positive)`` over ``n`` bootstrap resamples
    drawn within each class (stratified, so every resample has both classes), all rows scored at
    once by the batched metric."""
    s, p, single = _prepare(scores, is_positive, "bootstrap_ci")
    if not single:
        raise ConfigError("bootstrap_ci: scores must have shape [N]")
    pos, neg = np.flatnonzero(p[0]), np.flatnonzero(~p[0])
    rng = np.random.default_rng(seed)
    idx = np.concatenate(
        [
            pos[rng.integers(0, len(pos), (n, len(pos)))],
            neg[rng.integers(0, len(neg), (n, len(neg)))],
        ],
        axis=1,
    )
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    vals = np.asarray(metric(s[0][idx], labels), dtype=np.float64)
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))
