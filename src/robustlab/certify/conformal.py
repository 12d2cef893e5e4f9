"""Conformal prediction sets: split conformal, and robust RSCP+ with Post-Training Transformation.

* **Split conformal** (Vovk et al. 2005; Angelopoulos & Bates, arXiv:2107.07511): with scores
  ``s_i = S(x_i, y_i)`` on ``n`` calibration points and ``qhat`` their ``ceil((n + 1)(1 - alpha))``-th
  smallest value, ``C(x) = {c : S(x, c) <= qhat}`` covers an exchangeable test label with
  probability ``>= 1 - alpha``. Scores: ``lac`` (``1 - p_c``, Sadinle et al. 2019) and ``aps``
  (mass of classes more likely than ``c`` plus ``u p_c``, ``u ~ U(0, 1)``, Romano et al. 2020).
  No guarantee under attack: an adversary changes ``x``.
* **RSCP+** (Yan, Shang & Weng, "Provably Robust Conformal Prediction with Improved Efficiency",
  ICLR 2024, arXiv:2404.19651; S14). Threat model: L2 perturbations ``|delta| <= eps`` of the test
  input, chosen without seeing the smoothing noise. Smoothed score ``Sbar(x, c) = E S(x + e, c)``,
  ``e ~ N(0, sigma^2 I)``, ``S`` in ``[0, 1]``; ``Phi^-1(Sbar)`` is ``1/sigma``-Lipschitz (Salman et
  al., 2019). Only Monte-Carlo means ``Shat`` over ``n`` samples are available; one-sided Hoeffding
  gives ``|Shat - Sbar| <= b = sqrt(ln(1 / beta) / (2 n))`` in the needed direction with probability
  ``>= 1 - beta`` each. Calibrate ``tau`` = split-conformal quantile of ``Phi^-1(Shat(x_i, y_i))`` at
  level ``alpha - 2 beta``; predict ``C(x') = {c : Phi^-1(Shat(x', c) - b) <= Phi^-1(Phi(tau) + b) +
  eps / sigma}``. Proof: exchangeability gives ``Shat(x, y) <= Phi(tau)`` (prob ``>= 1 - alpha + 2
  beta``) for the clean test point; Hoeffding: ``Sbar(x, y) <= Phi(tau) + b``; Lipschitz:
  ``Phi^-1 Sbar(x', y) <= Phi^-1(Phi(tau) + b) + eps / sigma``; Hoeffding at ``x'``: ``Shat(x', y) - b
  <= Sbar(x', y)``. A union bound leaves ``P(y in C(x')) >= 1 - alpha`` for every ``|x' - x| <= eps``.
* **PTT** (same paper): the base score is replaced by ``sigmoid((rank(S) - b_ptt) / T)``, where
  ``rank`` is the empirical CDF of holdout scores (disjoint from calibration) and ``b_ptt = 1 -
  alpha``: a fixed monotone map into ``[0, 1]`` that pushes scores to 0 or 1 so that ``Phi^-1`` of
  their mean moves less under noise -- smaller sets, same guarantee.

Example::

    cp = SplitConformal(alpha=0.1).calibrate(clf, x_cal, y_cal)
    sets = cp.predict_sets(clf, x_test)            # bool [B, C]
    rs = RSCP(alpha=0.1, sigma=0.25, eps=0.125, ptt=True)
    rs.calibrate(clf, x_cal, y_cal, rng=rng_cal, x_holdout=x_h, y_holdout=y_h)
    sets = rs.predict_sets(clf, x_adv, rng=rng_test)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab.certify.base import require_int, require_positive, require_probability
from robustlab.certify.smoothing import gaussian_draws
from robustlab.core.errors import ConfigError
from robustlab.core.rng import ExampleRNG

SCORES = ("lac", "aps")


def class_scores(probs: torch.Tensor, score: str, u: torch.Tensor | None = None) -> torch.Tensor:
    """Nonconformity scores ``[B, C]`` in ``[0, 1]`` of every class (``u``: APS tie-breaking)."""
    if score == "lac":
        return 1 - probs
    if score == "aps":
        u = torch.ones_like(probs[:, :1]) if u is None else u.view(-1, 1).to(probs)
        above = (probs[:, None, :] > probs[:, :, None]).to(probs)  # [B, c, c'] p_c' > p_c
        return ((above * probs[:, None, :]).sum(-1) + u * probs).clamp(0, 1)
    raise ConfigError(f"conformal: score must be one of {SCORES}, got {score!r}")


def conformal_quantile(cal_scores: torch.Tensor, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest calibration score (``inf`` if beyond ``n``)."""
    n = cal_scores.numel()
    k = math.ceil((n + 1) * (1 - alpha))
    return math.inf if k > n else float(cal_scores.flatten().double().sort().values[k - 1])


def coverage_and_size(sets: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Empirical coverage of labels ``y`` and mean set size of boolean ``sets`` ``[B, C]``."""
    covered = sets.gather(1, y.view(-1, 1).to(sets.device)).float().mean().item()
    return covered, sets.float().sum(1).mean().item()


def rscp_sets(smoothed: torch.Tensor, qhat: float, n: int, beta: float, shift: float):
    """RSCP+ sets from Monte-Carlo mean scores ``[B, C]`` (``n`` samples each), the calibrated
    ``qhat`` (quantile of ``Shat`` at ``alpha - 2 beta``) and ``shift = eps / sigma``."""
    b = math.sqrt(math.log(1 / beta) / (2 * n))
    lhs = torch.special.ndtri((smoothed.double() - b).clamp(0, 1))
    thr = torch.special.ndtri(torch.tensor(min(1.0, qhat + b), dtype=torch.float64))
    return lhs <= thr + shift


def _probs(model: Any, x: Any) -> torch.Tensor:
    """Class probabilities ``[B, C]`` of a batch (tensors, or texts for text classifiers).

    Adapters return logits, or log-probabilities where ``capabilities.probs_only``: softmax turns
    either into probabilities (exactly, up to rounding, for normalized log-probabilities).
    """
    with torch.no_grad():
        return model.logits(x).softmax(-1)


class SplitConformal:
    """Split conformal prediction sets with marginal coverage ``>= 1 - alpha`` (clean data)."""

    def __init__(self, alpha: float = 0.1, score: str = "lac") -> None:
        self.alpha, self.score = alpha, score

    def _u(self, rng: ExampleRNG | None, b: int) -> torch.Tensor | None:
        return None if rng is None or self.score != "aps" else rng.fork("aps").uniform(1)

    def calibrate(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG | None = None
    ) -> SplitConformal:
        """Fit ``qhat_`` on calibration data (exchangeable with the test data)."""
        require_probability("conformal", alpha=self.alpha)
        s = class_scores(_probs(model, x), self.score, self._u(rng, len(x)))
        self.qhat_ = conformal_quantile(s.gather(1, y.view(-1, 1)), self.alpha)
        return self

    def predict_sets(self, model: Any, x: torch.Tensor, rng: ExampleRNG | None = None):
        """Boolean prediction sets ``[B, C]``."""
        if not hasattr(self, "qhat_"):
            raise ConfigError("conformal: call calibrate() before predict_sets()")
        return class_scores(_probs(model, x), self.score, self._u(rng, len(x))) <= self.qhat_


class RSCP(SplitConformal):
    """RSCP+ sets valid under L2 attacks of size ``eps`` (``eps = 0``: clean), optionally with PTT.

    ``n`` Monte-Carlo samples per example, noise ``sigma``, Hoeffding failure ``beta`` per use
    (``alpha > 2 beta`` required), ``temperature`` of the PTT sigmoid.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        sigma: float = 0.25,
        eps: float = 0.125,
        n: int = 256,
        beta: float = 0.001,
        score: str = "lac",
        ptt: bool = False,
        temperature: float = 0.05,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(alpha, score)
        self.sigma, self.eps, self.n, self.beta = sigma, eps, n, beta
        self.ptt, self.temperature, self.batch_size = ptt, temperature, batch_size

    def validate(self) -> None:
        """Raise :class:`ConfigError` for invalid hyperparameters."""
        require_probability("rscp", alpha=self.alpha, beta=self.beta)
        require_positive("rscp", sigma=self.sigma, temperature=self.temperature)
        require_int("rscp", 1, n=self.n, batch_size=self.batch_size)
        if not (isinstance(self.eps, int | float) and self.eps >= 0):
            raise ConfigError(f"rscp: eps must be a number >= 0, got {self.eps!r}")
        if not self.alpha > 2 * self.beta:
            raise ConfigError(f"rscp: alpha ({self.alpha}) must exceed 2 * beta ({self.beta})")

    def _transform(self, s: torch.Tensor) -> torch.Tensor:
        if not self.ptt:
            return s
        ref = self.ptt_ref_.to(s)
        rank = torch.searchsorted(ref, s.contiguous(), right=True).to(s) / ref.numel()
        return torch.sigmoid((rank - (1 - self.alpha)) / self.temperature)

    def smoothed_scores(self, model: Any, x: torch.Tensor, rng: ExampleRNG) -> torch.Tensor:
        """Monte-Carlo mean ``[B, C]`` of the (transformed) score over ``n`` noisy copies."""
        b, shape = x.shape[0], x.shape[1:]
        total = torch.zeros(b, model.num_classes, dtype=torch.float64, device=x.device)
        per = max(1, self.batch_size // self.n)
        for start in range(0, b, per):
            sl = slice(start, min(b, start + per))
            sub = ExampleRNG(rng.keys[sl])
            noise = gaussian_draws(sub.keys, 0, self.n, shape).to(x.device, x.dtype)
            z = (x[sl, None] + self.sigma * noise).flatten(0, 1)
            u = sub.uniform(self.n).flatten() if self.score == "aps" else None
            s = self._transform(class_scores(_probs(model, z), self.score, u))
            total[sl] = s.view(-1, self.n, model.num_classes).double().mean(1)
        return total

    def calibrate(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        rng: ExampleRNG | None = None,
        x_holdout: torch.Tensor | None = None,
        y_holdout: torch.Tensor | None = None,
    ) -> RSCP:
        """Fit the PTT ranking on the holdout (if ``ptt``) and ``qhat_`` on calibration data."""
        self.validate()
        if rng is None:
            raise ConfigError("rscp: calibrate needs an ExampleRNG (rng=...)")
        if self.ptt:
            if x_holdout is None or y_holdout is None:
                raise ConfigError("rscp: ptt=True needs x_holdout and y_holdout (not calibration)")
            s = class_scores(_probs(model, x_holdout), self.score).gather(1, y_holdout.view(-1, 1))
            self.ptt_ref_ = s.flatten().double().sort().values
        s_cal = self.smoothed_scores(model, x, rng.fork("rscp")).gather(1, y.view(-1, 1))
        q = conformal_quantile(s_cal, self.alpha - 2 * self.beta)
        self.qhat_ = q
        return self

    def predict_sets(self, model: Any, x: torch.Tensor, rng: ExampleRNG | None = None):
        """Boolean RSCP+ sets ``[B, C]``, valid for any input within ``eps`` of an exchangeable one."""
        if not hasattr(self, "qhat_") or rng is None:
            raise ConfigError("rscp: call calibrate() first and pass rng= to predict_sets()")
        smoothed = self.smoothed_scores(model, x, rng.fork("rscp"))
        return rscp_sets(smoothed, self.qhat_, self.n, self.beta, self.eps / self.sigma)
