"""Gaussian randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019, arXiv:1902.02918).

The smoothed classifier ``g(x) = argmax_c P(f(x + e) = c)``, ``e ~ N(0, sigma^2 I)``, is certified
in L2: if the top class has probability ``p_A > 1/2`` then ``g`` is constant on the L2 ball of radius
``sigma * Phi^-1(p_A)`` around ``x``. :class:`GaussianSmoothing` implements the paper's Monte-Carlo
procedures CERTIFY and PREDICT, batched over examples *and* noise samples.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy import stats

from robustlab.certify.base import (
    check_certify_inputs,
    require_int,
    require_positive,
    require_probability,
)
from robustlab.certify.smoothing_batch import BatchFeeder, choose
from robustlab.core.errors import ConfigError
from robustlab.core.registry import certifiers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Certificate, Fraction, Positive, PositiveInt

# Noise is drawn per example in chunks of this many samples, so the noise an example sees does not
# depend on ``batch_size``, on the batch it is in, or on its position in the batch.
DRAW = 256


def lower_confidence_bound(k: torch.Tensor, n: int, alpha: float) -> torch.Tensor:
    """One-sided Clopper-Pearson lower bound on a binomial proportion (``k`` of ``n``), level ``alpha``.

    Equal to the lower end of the exact two-sided ``1 - 2 alpha`` interval (Cohen et al. use
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``); ``0`` where ``k == 0``.
    """
    kk = k.detach().cpu().double().numpy()  # B scalars once per batch: scipy has the exact quantile
    low = stats.beta.ppf(alpha, kk, n - kk + 1)
    return torch.from_numpy(low).nan_to_num(0.0).where(k.cpu() > 0, 0.0).to(k.device)


def binom_pvalue_half(k: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Two-sided binomial test p-values of ``k`` successes in ``n`` trials against ``p = 1/2``."""
    low = torch.minimum(k, n - k).detach().cpu().double().numpy()
    p = 2 * stats.binom.cdf(low, n.detach().cpu().double().numpy(), 0.5)
    return torch.from_numpy(p).clamp(max=1.0).to(k.device)


def gaussian_draws(keys: torch.Tensor, draw: int, m: int, shape: torch.Size) -> torch.Tensor:
    """``[len(keys), m, *shape]`` standard normals; row ``i`` depends only on ``(keys[i], draw)``.

    One seeded CPU generator per (example, draw) of up to ``DRAW`` samples: as batch-invariant as
    :meth:`ExampleRNG.normal` but ~100x faster (torch's vectorised sampler per row).
    :meth:`GaussianSmoothing.sample_counts` draws the same numbers straight into its batch buffer.
    """
    out = torch.empty(len(keys), m, *shape)
    g = torch.Generator()
    for i, key in enumerate(keys.tolist()):
        g.manual_seed(draw_seed(key, draw))
        torch.randn((m, *shape), generator=g, out=out[i])
    return out


def draw_seed(key: int, draw: int) -> int:
    """Seed of the CPU generator of draw ``draw`` of the example stream ``key``."""
    return (int(key) << 24) | draw


@certifiers.register("smoothing")
class GaussianSmoothing:
    """Certify the Gaussian-smoothed classifier in L2 (Cohen, Rosenfeld & Kolter, 2019).

    Threat model: L2 balls (``norm="2"``). CERTIFY draws ``n0`` noisy copies of each input to pick
    the top class ``c_A``, then ``n`` more to bound ``p_A`` from below (one-sided Clopper-Pearson at
    level ``alpha``); it abstains (``pred = -1``, radius 0) unless ``p_A_lower > 1/2`` and otherwise
    certifies radius ``sigma * Phi^-1(p_A_lower)``. With probability at least ``1 - alpha`` per
    example, the smoothed classifier predicts ``pred`` everywhere within the radius.

    Noise is added in the model's *input* space (the adapter's ``domain``) and is **not clipped**
    to the domain: the certificate is a statement about unclipped Gaussian noise, so the base model
    sees inputs outside its domain (train it with the same unclipped noise). Noise comes from the
    per-example :class:`~robustlab.core.rng.ExampleRNG` streams, so results do not depend on batch
    size, batch order or ``batch_size``; ``batch_size`` is the noisy inputs per forward pass, or
    ``"auto"`` (default): batch size and memory layout chosen by a short timed probe per model.

    Example::

        smoother = GaussianSmoothing(sigma=0.25, n=1000)
        cert = smoother.certify(clf, x, y, rng=ExampleRNG.from_seed(0, ids))
        certified_acc = ((cert.pred == y) & (cert.radius >= 0.5)).float().mean()
        labels = smoother.predict(clf, x, rng=ExampleRNG.from_seed(1, ids))  # -1 = abstain
    """

    norm = "2"
    # what the certificate is about (declared, read by the report): the smoothed classifier, not
    # the base model that attacks attack; certifiers of the model itself (ibp, milp) declare none
    certifies = "smoothed"

    def __init__(
        self,
        sigma: Positive = 0.25,
        n0: PositiveInt = 100,
        n: PositiveInt = 1000,
        alpha: Fraction = 0.001,
        batch_size: int | str = "auto",
    ) -> None:
        self.sigma = sigma
        self.n0 = n0
        self.n = n
        self.alpha = alpha
        self.batch_size = batch_size

    def validate(self) -> None:
        """Raise :class:`~robustlab.core.errors.ConfigError` for invalid hyperparameters."""
        name = getattr(self, "registered_name", "smoothing")
        require_positive(name, sigma=self.sigma)
        require_probability(name, alpha=self.alpha)
        require_int(name, 1, n0=self.n0, n=self.n)
        if self.batch_size != "auto":
            require_int(name, 1, batch_size=self.batch_size)  # type: ignore[arg-type]
        if self.n0 > self.n:
            raise ConfigError(f"{name}: n0 ({self.n0}) must not exceed n ({self.n})")

    def cost(self, n: int) -> dict[str, int]:
        """Model passes of :meth:`certify` on ``n`` examples (``robustlab plan --estimate``):
        ``n0 + n`` noisy forward passes each."""
        return {"forward": (self.n0 + self.n) * n, "backward": 0}

    def certify(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, *, rng: ExampleRNG
    ) -> Certificate:
        """CERTIFY (Cohen et al., Algorithm 1 / Section 3.2) for a batch; ``y`` is not used."""
        self.validate()
        check_certify_inputs(model, x, y, "smoothing")
        c_a = self.sample_counts(model, x, self.n0, rng.fork("smoothing/select")).argmax(dim=1)
        counts = self.sample_counts(model, x, self.n, rng.fork("smoothing/estimate"))
        n_a = counts.gather(1, c_a[:, None]).squeeze(1)
        p_lower = lower_confidence_bound(n_a, self.n, self.alpha)
        certified = p_lower > 0.5
        radius = self.sigma * torch.special.ndtri(p_lower.clamp(0.5, 1.0))
        return Certificate(
            pred=torch.where(certified, c_a, -1),
            radius=torch.where(certified, radius, 0.0),
            norm=self.norm,
            abstained=~certified,
            extra={
                "p_lower": p_lower,
                "count": n_a,
                "samples": torch.full_like(n_a, self.n0 + self.n),
            },
        )

    def predict(
        self,
        model: Any,
        x: torch.Tensor,
        *,
        rng: ExampleRNG,
        n: int | None = None,
        alpha: float | None = None,
    ) -> torch.Tensor:
        """PREDICT (Cohen et al., Section 3.1): the smoothed class, or -1 (abstain), per example.

        Returns the top class of ``n`` noisy samples if the two-sided binomial test of its count
        against the runner-up's rejects ``p = 1/2`` at level ``alpha`` (so a wrong class is returned
        with probability at most ``alpha``); ``n`` and ``alpha`` default to the certifier's.
        """
        self.validate()
        n = self.n if n is None else n
        alpha = self.alpha if alpha is None else alpha
        require_int("smoothing predict", 1, n=n)
        require_probability("smoothing predict", alpha=alpha)
        check_certify_inputs(model, x, None, "smoothing predict")
        counts = self.sample_counts(model, x, n, rng.fork("smoothing/predict"))
        top = counts.topk(min(2, counts.shape[1]), dim=1)
        n_a = top.values[:, 0]
        n_b = top.values[:, 1] if counts.shape[1] > 1 else torch.zeros_like(n_a)
        p = binom_pvalue_half(n_a, n_a + n_b)
        return torch.where(p <= alpha, top.indices[:, 0], -1)

    def sample_counts(self, model: Any, x: torch.Tensor, num: int, rng: ExampleRNG) -> torch.Tensor:
        """``[B, num_classes]`` int64 counts of the base model's argmax over ``num`` noisy copies.

        Each example's noise is its own stream (:func:`gaussian_draws`, independent of packing);
        the noisy inputs of consecutive draws and examples are queued and sent to the model in
        *full* forward passes (only the last one may be shorter) of ``batch_size`` inputs, in the
        batch size and memory layout a timed probe found fastest when ``batch_size="auto"``
        (:mod:`robustlab.certify.smoothing_batch`).
        """
        b, shape = x.shape[0], x.shape[1:]
        counts = torch.zeros(b, model.num_classes, dtype=torch.long, device=x.device)
        if self.batch_size == "auto":
            size, fmt = choose(model, shape, x.dtype, x.device)
        else:
            size, fmt = int(self.batch_size), torch.contiguous_format
        size = max(1, min(size, b * num))
        feed = BatchFeeder(model, counts, size, fmt, shape, x.dtype, x.device, chunk=DRAW)
        draw = min(num, DRAW)
        gen = torch.Generator()
        sizes = [min(draw, num - done) for done in range(0, num, draw)]
        add, seed, sigma = feed.add_normal, gen.manual_seed, self.sigma
        with torch.no_grad():
            for i, (key, center) in enumerate(zip(rng.keys.tolist(), x, strict=True)):
                for d, k in enumerate(sizes):  # = gaussian_draws(keys[i:i+1], d, ...): per example
                    seed(draw_seed(key, d))
                    add(center, k, sigma, i, gen)
            feed.finish()
        return counts
