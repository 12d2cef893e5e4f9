"""Calibration and selective-prediction metrics (S30: uncertainty quantification), batched numpy.

Inputs are per-example **confidences** (the top-class probability, max softmax), **correctness**
(0/1) and, for the proper scoring rules, the class **logits**. Everything is float64.

* **ECE** (Naeini et al., AAAI 2015; Guo et al., "On Calibration of Modern Neural Networks", ICML
  2017): ``sum_b |B_b|/n * |acc(B_b) - conf(B_b)|`` over non-empty bins. Two binnings:

  - ``"width"``: ``M`` equal-width bins of ``[0, 1]``, edges ``np.linspace(0, 1, M + 1)``, bin
    ``b`` = ``(edge_b, edge_{b+1}]`` (Guo et al.'s right-closed bins; 0 falls in the first).
    torchmetrics' ``MulticlassCalibrationError`` uses left-closed ``[edge_b, edge_{b+1})`` bins and
    puts a confidence of exactly 1.0 in a bin of its own: the two agree unless a confidence lies
    exactly on an edge.
  - ``"mass"`` (equal-mass / adaptive, Nixon et al., "Measuring Calibration in Deep Learning",
    CVPRW 2019): the examples sorted by confidence are cut into ``M`` runs of ``floor(k n / M)``
    boundaries; **tied confidences are never split**: a boundary inside a run of equal
    confidences moves to the end of that run, so a bin may hold more than ``n / M`` examples and
    fewer bins may remain. ``M > n`` and (for ``M > 1``) all-equal confidences are refused.

* **MCE**: the largest ``|acc - conf|`` over non-empty bins.
* **Brier score** (Brier 1950), multiclass, **summed over classes**: ``sum_k (p_k - 1[k = y])^2``
  per example, in ``[0, 2]`` (scikit-learn's ``brier_score_loss(..., scale_by_half=False)``; halve
  it for the binary-style ``[0, 1]`` scale).
* **NLL**: ``-log softmax(z / T)_y`` (natural log), from the logits (no underflow).
* **Risk-coverage curve and AURC** (Geifman & El-Yaniv, "Selective Classification for Deep Neural
  Networks", NeurIPS 2017; Geifman et al., "Bias-Reduced Uncertainty Estimation for Deep Neural
  Classifiers", ICLR 2019): examples are accepted in order of decreasing confidence; at coverage
  ``k / n`` the selective risk is the error rate of the ``k`` accepted examples; AURC is the mean
  of the ``n`` risks (``k = 1..n``). **Ties**: within a run of equal confidences the order is
  random, and the curve is its expectation (the run's errors spread evenly over its positions),
  so it does not depend on the input order. **E-AURC** = AURC minus the AURC of the ideal order
  (every correct example first).
* **Temperature scaling** (Guo et al. 2017): the ``T > 0`` minimising the mean NLL of
  ``softmax(z / T)`` on a held-out set. In ``beta = 1 / T`` the NLL is convex, with derivative
  ``mean(E_p[z] - z_y)`` (increasing); the root is found by bisection in ``log beta`` to machine
  precision, within ``[t_min, t_max]`` (``at_bound`` flags a clipped fit: e.g. a held-out set
  with no errors, whose NLL keeps falling as ``T -> 0``).

Example::

    s = scores(logits, y)                       # confidence, pred, nll, brier per example
    ece(s["confidence"], s["pred"] == y, 15, "mass")
    fit = fit_temperature(held_out_logits, held_out_y)
    scores(logits, y, fit.temperature)["nll"].mean()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from robustlab.core.errors import ConfigError

Binning = Literal["width", "mass"]
BINNINGS = ("width", "mass")


def _arrays(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).ravel()
    a = np.asarray(correct, dtype=np.float64).ravel()
    if len(c) != len(a):
        raise ConfigError(f"calibration: {len(c)} confidences for {len(a)} correctness values")
    if not len(c):
        raise ConfigError("calibration: no examples to bin")
    if not np.isfinite(c).all():
        raise ConfigError("calibration: NaN or infinite confidences (non-finite probabilities)")
    if (c < 0).any() or (c > 1).any():
        raise ConfigError(
            f"calibration: confidences must lie in [0, 1], got [{c.min():.6g}, {c.max():.6g}]"
        )
    if not np.isin(a, (0.0, 1.0)).all():
        raise ConfigError("calibration: correctness must be 0 or 1 for every example")
    return c, a


def _check_bins(n_bins: Any, binning: str) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ConfigError(f"calibration: n_bins must be an integer >= 1, got {n_bins!r}")
    if binning not in BINNINGS:
        raise ConfigError(f"calibration: binning must be 'width' or 'mass', got {binning!r}")
    return int(n_bins)


def bin_index(confidence: Any, n_bins: int, binning: Binning = "width") -> np.ndarray:
    """The bin (0-based, in order of confidence) of each example; see the module doc for the
    binnings. Equal-mass bins are renumbered 0..B-1 over the bins that remain after ties."""
    m = _check_bins(n_bins, binning)
    c, _ = _arrays(confidence, np.zeros(np.size(confidence)))
    if binning == "width":
        edges = np.linspace(0.0, 1.0, m + 1)
        return np.clip(np.searchsorted(edges, c, side="left") - 1, 0, m - 1)
    n = len(c)
    if m > n:
        raise ConfigError(
            f"calibration: {m} equal-mass bins for {n} examples (at most one bin per example)"
        )
    order = np.argsort(c, kind="stable")
    s = c[order]
    if m > 1 and s[0] == s[-1]:
        raise ConfigError(
            f"calibration: all {n} confidences equal {s[0]:.6g}, so {m} equal-mass bins cannot "
            "split them; use equal-width bins (or n_bins 1)"
        )
    cuts = (np.arange(1, m) * n) // m
    cuts = np.searchsorted(s, s[cuts - 1], side="right")  # a tie run stays in one bin
    cuts = np.unique(cuts[(cuts > 0) & (cuts < n)])
    sorted_bin = np.zeros(n, dtype=np.int64)
    sorted_bin[cuts] = 1
    out = np.empty(n, dtype=np.int64)
    out[order] = np.cumsum(sorted_bin)
    return out


@dataclass(frozen=True)
class Reliability:
    """Per-bin data of a reliability diagram: ``count``, mean ``confidence``, ``accuracy`` (NaN in
    empty bins), and the bin's ``lo``/``hi`` (the edges for equal-width bins, the smallest and
    largest confidence for equal-mass bins)."""

    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """``|accuracy - confidence|`` per bin (NaN where empty)."""
        return np.abs(self.accuracy - self.confidence)

    def ece(self) -> float:
        keep = self.count > 0
        return float(np.sum(self.count[keep] / self.count.sum() * self.gap[keep]))

    def mce(self) -> float:
        return float(np.max(self.gap[self.count > 0]))


def reliability(
    confidence: Any, correct: Any, n_bins: int = 15, binning: Binning = "width"
) -> Reliability:
    """Reliability-diagram data of ``n_bins`` bins (``"width"`` or ``"mass"``)."""
    c, a = _arrays(confidence, correct)
    idx = bin_index(c, n_bins, binning)
    m = int(n_bins) if binning == "width" else int(idx.max()) + 1
    count = np.bincount(idx, minlength=m).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=c, minlength=m) / count
        acc = np.bincount(idx, weights=a, minlength=m) / count
    if binning == "width":
        edges = np.linspace(0.0, 1.0, m + 1)
        lo, hi = edges[:-1], edges[1:]
    else:
        lo = np.full(m, np.inf)
        hi = np.full(m, -np.inf)
        np.minimum.at(lo, idx, c)
        np.maximum.at(hi, idx, c)
    return Reliability(count, conf, acc, lo, hi)


def ece(confidence: Any, correct: Any, n_bins: int = 15, binning: Binning = "width") -> float:
    """Expected calibration error (see the module doc)."""
    return reliability(confidence, correct, n_bins, binning).ece()


def mce(confidence: Any, correct: Any, n_bins: int = 15, binning: Binning = "width") -> float:
    """Maximum calibration error over non-empty bins."""
    return reliability(confidence, correct, n_bins, binning).mce()


def _logits(logits: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y).ravel()
    if z.ndim != 2 or len(z) != len(t):
        raise ConfigError(f"calibration: logits of shape {z.shape} for {len(t)} labels")
    if not np.isfinite(z).all():
        raise ConfigError("calibration: NaN or infinite logits (non-finite probabilities)")
    if len(t) and (t.min() < 0 or t.max() >= z.shape[1]):
        raise ConfigError(f"calibration: labels outside 0..{z.shape[1] - 1}")
    return z, t.astype(np.int64)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def scores(logits: Any, y: Any, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Per-example ``confidence`` (max softmax of ``logits / T``), ``pred`` (argmax), ``nll``
    (``-log p_y``) and ``brier`` (``sum_k (p_k - 1[k = y])^2``)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"calibration: temperature must be > 0, got {temperature!r}")
    z, t = _logits(logits, y)
    lp = log_softmax(z / temperature)
    p = np.exp(lp)
    rows = np.arange(len(t))
    py = p[rows, t]
    return {
        "confidence": p.max(axis=1),
        "pred": z.argmax(axis=1),
        "nll": -lp[rows, t],
        "brier": np.maximum((p * p).sum(axis=1) - 2.0 * py + 1.0, 0.0),
    }


def risk_coverage(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)`` at coverages ``k / n``, ``k = 1..n`` (accepting by decreasing
    confidence; expected risk over the order of tied confidences, see the module doc)."""
    c, a = _arrays(confidence, correct)
    n = len(c)
    order = np.argsort(-c, kind="stable")
    s, err = c[order], 1.0 - a[order]
    start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first position of each tie run
    size = np.diff(np.r_[start, n])
    run_err = np.add.reduceat(err, start)
    before = np.r_[0.0, np.cumsum(run_err)[:-1]]  # errors accepted before each run
    g = np.repeat(np.arange(len(start)), size)
    k = np.arange(1, n + 1, dtype=np.float64)
    expected = before[g] + (k - start[g]) * run_err[g] / size[g]
    return k / n, expected / k


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk-coverage curve: the mean selective risk over coverages ``k / n``."""
    return float(risk_coverage(confidence, correct)[1].mean())


def excess_aurc(confidence: Any, correct: Any) -> float:
    """AURC minus that of the ideal ranking (all correct examples accepted first)."""
    c, a = _arrays(confidence, correct)
    n, right = len(a), a.sum()
    k = np.arange(1, n + 1, dtype=np.float64)
    ideal = float((np.maximum(k - right, 0.0) / k).mean())
    return aurc(c, a) - ideal


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the held-out NLL before (``T = 1``) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    n: int
    at_bound: bool


def nll_derivative(logits: Any, y: Any, beta: float) -> float:
    """``d/d beta`` of the mean NLL of ``softmax(beta z)``: ``mean(E_p[z] - z_y)``."""
    z, t = _logits(logits, y)
    z = z - z.max(axis=1, keepdims=True)
    return _derivative(z, t, beta)


def _derivative(z: np.ndarray, t: np.ndarray, beta: float) -> float:
    w = np.exp(beta * z - (beta * z).max(axis=1, keepdims=True))
    ez = (w * z).sum(axis=1) / w.sum(axis=1)
    return float((ez - z[np.arange(len(t)), t]).mean())


def fit_temperature(
    logits: Any, y: Any, t_min: float = 1e-2, t_max: float = 1e2, iters: int = 200
) -> TemperatureFit:
    """Temperature scaling: the ``T`` in ``[t_min, t_max]`` minimising the mean NLL of
    ``softmax(logits / T)`` (never fit it on the examples it is scored on)."""
    z, t = _logits(logits, y)
    if not len(t):
        raise ConfigError("temperature scaling: no held-out examples to fit T on")
    if not 0 < t_min < t_max:
        raise ConfigError(f"temperature scaling: need 0 < t_min < t_max, got {t_min}, {t_max}")
    zc = z - z.max(axis=1, keepdims=True)
    lo, hi = np.log(1.0 / t_max), np.log(1.0 / t_min)  # in log beta
    at_bound = False
    if _derivative(zc, t, np.exp(lo)) >= 0:
        beta, at_bound = np.exp(lo), True
    elif _derivative(zc, t, np.exp(hi)) <= 0:
        beta, at_bound = np.exp(hi), True
    else:
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if _derivative(zc, t, np.exp(mid)) < 0:
                lo = mid
            else:
                hi = mid
        beta = float(np.exp(0.5 * (lo + hi)))
    temp = float(1.0 / beta)
    return TemperatureFit(
        temperature=temp,
        nll_before=float(scores(z, t)["nll"].mean()),
        nll_after=float(scores(z, t, temp)["nll"].mean()),
        n=len(t),
        at_bound=at_bound,
    )
