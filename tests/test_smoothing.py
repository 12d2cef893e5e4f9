"""Gaussian randomized smoothing against closed forms and an unbatched transcription of the paper."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from scipy import stats
from torch import nn

from robustlab.certify.smoothing import GaussianSmoothing, binom_pvalue_half
from robustlab.core.errors import ConfigError
from robustlab.core.registry import certifiers, datasets
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Domain
from robustlab.models import CallableClassifier, TorchClassifier
from robustlab.testing import check_certifier

SIGMA = 0.25
N_TEST = 50
DOMAIN = Domain(0.0, 1.0, (1, 8, 8))


def train_noisy_mlp(sigma: float = SIGMA, epochs: int = 40, seed: int = 0) -> TorchClassifier:
    """An MLP trained on digits with unclipped Gaussian noise augmentation (a few seconds): the
    ``noise`` trainer of robustlab's training loop on the ``mlp`` base (cached)."""
    from robustlab.training.api import train

    return train({
        "base": {"name": "mlp", "params": {"side": 8, "init_seed": seed}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "noise", "params": {"sigma": sigma, "lr": 3e-3, "batch_size": 64}},
        "seed": seed, "epochs": epochs, "holdout": 0,
    })  # fmt: skip


@pytest.fixture(scope="module")
def noisy_model() -> TorchClassifier:
    return train_noisy_mlp()


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    assert d.ids is not None
    return d.x[:N_TEST], d.y[:N_TEST], d.ids[:N_TEST]


def cp_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound via scipy's exact binomial interval."""
    return float(stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha).low)


def reference_certify(
    model: Any, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float, seed: int
) -> tuple[list[int], list[float]]:
    """CERTIFY of Cohen, Rosenfeld & Kolter (2019), Algorithm 1, one example at a time."""
    g = torch.Generator().manual_seed(seed)
    preds, radii = [], []
    for xi in x:

        def sample_noise(num: int, xi: torch.Tensor = xi) -> torch.Tensor:
            noisy = xi[None] + sigma * torch.randn((num, *xi.shape), generator=g)
            with torch.no_grad():
                labels = model.logits(noisy).argmax(dim=1)
            return torch.bincount(labels, minlength=model.num_classes)

        c_hat = int(sample_noise(n0).argmax())
        n_a = int(sample_noise(n)[c_hat])
        p_lower = cp_lower(n_a, n, alpha)
        if p_lower < 0.5:
            preds.append(-1)
            radii.append(0.0)
        else:
            preds.append(c_hat)
            radii.append(sigma * float(stats.norm.ppf(p_lower)))
    return preds, radii


def test_radius_matches_closed_form(noisy_model: Any, digits: Any) -> None:
    x, y, ids = digits
    sm = GaussianSmoothing(sigma=SIGMA, n0=100, n=500, alpha=0.001)
    cert = sm.certify(noisy_model, x, y, rng=ExampleRNG.from_seed(0, ids))
    assert cert.norm == "2"
    assert (cert.extra["samples"] == 600).all()
    for i, k in enumerate(cert.extra["count"].tolist()):
        p = cp_lower(k, 500, 0.001)
        assert cert.extra["p_lower"][i].item() == pytest.approx(p, rel=1e-9, abs=1e-12)
        if p <= 0.5:
            assert cert.abstained[i] and cert.pred[i] == -1 and cert.radius[i] == 0
        else:
            assert not cert.abstained[i]
            expected = SIGMA * stats.norm.ppf(p)
            assert cert.radius[i].item() == pytest.approx(expected, rel=1e-6)
    # the noise-trained model certifies most test digits
    assert ((cert.pred == y) & (cert.radius > 0.25)).float().mean() > 0.5


def test_agrees_with_unbatched_reference(noisy_model: Any, digits: Any) -> None:
    x, y, ids = digits
    n0, n, alpha = 100, 500, 0.001
    cert = GaussianSmoothing(SIGMA, n0, n, alpha).certify(
        noisy_model, x, y, rng=ExampleRNG.from_seed(1, ids)
    )
    ref_pred, ref_radius = reference_certify(noisy_model, x, SIGMA, n0, n, alpha, seed=1)
    ref_pred_t, ref_radius_t = torch.tensor(ref_pred), torch.tensor(ref_radius)
    # both are Monte-Carlo estimates with independent noise: only examples whose p_A lies within a
    # few standard errors (sqrt(p (1 - p) / n) <= 0.022) of a threshold may land on another side
    for r in (0.0, 0.25, 0.4, 0.5):  # n = 500, alpha = 0.001 cannot certify beyond ~0.55
        ours = ((cert.pred == y) & (cert.radius >= r)).float().mean().item()
        ref = ((ref_pred_t == y) & (ref_radius_t >= r)).float().mean().item()
        assert abs(ours - ref) <= 0.1, f"certified accuracy at r={r}: {ours:.2f} vs {ref:.2f}"
    both = ~cert.abstained & (ref_pred_t >= 0)
    assert (cert.pred[both] == ref_pred_t[both]).float().mean() >= 0.95
    assert abs(cert.radius.double().mean().item() - ref_radius_t.mean().item()) <= 0.03


def test_linear_classifier_radius_bounded_by_distance(digits: Any) -> None:
    """A linear classifier's smoothed version is itself; its exact radius is the distance to the
    decision boundary (Cohen et al., Appendix B), so every certificate must lie below it."""
    x, y, ids = digits
    w = torch.linspace(-1, 1, 64).sin()
    b = -float((x.flatten(1) @ w).median())

    def linear(z: torch.Tensor) -> torch.Tensor:
        s = z.flatten(1) @ w + b
        return torch.stack([-s, s], dim=1)

    model = CallableClassifier(linear, 2, DOMAIN, grad=True, version="linear-test")
    sm = GaussianSmoothing(sigma=0.5, n0=50, n=2000, alpha=0.001)
    cert = sm.certify(model, x, y, rng=ExampleRNG.from_seed(2, ids))
    score = x.flatten(1) @ w + b
    dist = score.abs() / w.norm()
    ok = ~cert.abstained
    assert ok.sum() >= N_TEST // 2
    assert torch.equal(cert.pred[ok], (score[ok] > 0).long())
    assert (cert.radius[ok] <= dist[ok] + 1e-6).float().mean() >= 1 - 2 / N_TEST
    assert (cert.radius[ok] >= 0.5 * dist[ok] - 0.2).all()  # and not vacuously small


def test_constant_classifier_exact_radius(digits: Any) -> None:
    x, y, ids = digits
    model = CallableClassifier(lambda z: torch.eye(10)[[3] * len(z)], 10, DOMAIN, version="c3")
    sm = GaussianSmoothing(sigma=0.5, n0=10, n=400, alpha=0.01)
    cert = sm.certify(model, x, y, rng=ExampleRNG.from_seed(0, ids))
    expected = 0.5 * stats.norm.ppf(0.01 ** (1 / 400))  # n_A = n: Clopper-Pearson alpha^(1/n)
    assert (cert.pred == 3).all()
    torch.testing.assert_close(cert.radius.double(), torch.full((N_TEST,), expected).double())
    assert (sm.predict(model, x, rng=ExampleRNG.from_seed(1, ids)) == 3).all()


def test_batching_and_unclipped_noise(noisy_model: Any, digits: Any) -> None:
    x, y, ids = digits
    seen: list[float] = []

    def spy(z: torch.Tensor) -> torch.Tensor:
        seen.append(float(z.min()))
        return noisy_model.logits(z)

    model = CallableClassifier(spy, 10, DOMAIN, version="spy")
    big = GaussianSmoothing(SIGMA, n0=40, n=300, batch_size=1000)
    small = GaussianSmoothing(SIGMA, n0=40, n=300, batch_size=97)
    a = big.certify(model, x, y, rng=ExampleRNG.from_seed(3, ids))
    b = small.certify(model, x[:17], y[:17], rng=ExampleRNG.from_seed(3, ids[:17]))
    assert torch.equal(a.extra["count"][:17], b.extra["count"])
    assert torch.equal(a.radius[:17], b.radius)
    assert min(seen) < 0  # noisy inputs are not clipped to the [0, 1] domain


def test_predict_agrees_with_certify(noisy_model: Any, digits: Any) -> None:
    x, y, ids = digits
    sm = GaussianSmoothing(SIGMA, n0=100, n=500)
    cert = sm.certify(noisy_model, x, y, rng=ExampleRNG.from_seed(4, ids))
    pred = sm.predict(noisy_model, x, rng=ExampleRNG.from_seed(5, ids))
    both = (pred >= 0) & ~cert.abstained
    assert both.float().mean() > 0.7
    assert torch.equal(pred[both], cert.pred[both])


def test_binomial_pvalue_matches_scipy() -> None:
    ks = torch.tensor([0, 1, 5, 10, 11, 20, 37, 50, 99, 100])
    ns = torch.tensor([10, 10, 10, 20, 20, 20, 60, 100, 100, 100])
    ours = binom_pvalue_half(ks, ns)
    ref = [stats.binomtest(int(k), int(n), 0.5).pvalue for k, n in zip(ks, ns, strict=True)]
    torch.testing.assert_close(ours.double(), torch.tensor(ref).double(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -0.5}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n"),
        ({"n": 10.5}, "n"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_parameters(params: dict[str, Any], match: str, digits: Any) -> None:
    x, y, ids = digits
    sm = GaussianSmoothing(**params)
    model = CallableClassifier(lambda z: torch.zeros(len(z), 10), 10, DOMAIN)
    with pytest.raises(ConfigError, match=match):
        sm.certify(model, x[:2], y[:2], rng=ExampleRNG.from_seed(0, ids[:2]))
    with pytest.raises(ConfigError, match=match):
        sm.predict(model, x[:2], rng=ExampleRNG.from_seed(0, ids[:2]))


def test_registered() -> None:
    sm = certifiers.create("smoothing", {"sigma": 0.5, "n": 200})
    assert isinstance(sm, GaussianSmoothing) and sm.sigma == 0.5 and sm.n == 200
    with pytest.raises(ConfigError, match="n0"):
        certifiers.create("smoothing", {"n0": 1.5})


def test_soundness_contract(noisy_model: Any, digits: Any) -> None:
    x, y, _ = digits
    sm = GaussianSmoothing(SIGMA, n0=64, n=300, alpha=0.001)
    cert = check_certifier(sm, noisy_model, x, y, predict_kwargs={"n": 1000})
    assert (~cert.abstained).sum() > N_TEST // 2


def test_auto_batch_and_layout_do_not_change_counts(digits: Any) -> None:
    """The timed probe picks a batch size and memory layout; counts equal a fixed odd batch size."""
    from robustlab.certify.smoothing_batch import LAYOUTS, SIZES, choose
    from robustlab.core.registry import models

    x, y, ids = digits
    cnn = models.create("digits-cnn-noise", {"sigma": SIGMA})
    size, fmt = choose(cnn, x.shape[1:], x.dtype, x.device)
    assert size in SIZES and fmt in LAYOUTS
    assert choose(cnn, x.shape[1:], x.dtype, x.device) == (size, fmt)  # cached per model
    auto = GaussianSmoothing(SIGMA, n0=40, n=300).certify(
        cnn, x[:12], y[:12], rng=ExampleRNG.from_seed(5, ids[:12])
    )
    fixed = GaussianSmoothing(SIGMA, n0=40, n=300, batch_size=37).certify(
        cnn, x[:12], y[:12], rng=ExampleRNG.from_seed(5, ids[:12])
    )
    assert torch.equal(auto.extra["count"], fixed.extra["count"])
    with pytest.raises(ConfigError, match="batch_size"):
        GaussianSmoothing(batch_size="fast").validate()


def _art_agreement(n_examples: int, n: int) -> None:
    """robustlab's CERTIFY and ART's (same model, sigma, n0, n, alpha; independent noise) give the
    same certified accuracy at several radii within binomial noise."""
    pytest.importorskip("art")
    pytest.importorskip("statsmodels")
    import numpy as np
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    from robustlab.core.registry import models

    d = datasets.get("digits")(split="test")
    x, y, ids = d.x[:n_examples], d.y[:n_examples], d.ids[:n_examples]
    cnn = models.create("digits-cnn-noise", {"sigma": SIGMA})
    ours = GaussianSmoothing(SIGMA, n0=100, n=n, alpha=0.001).certify(
        cnn, x, y, rng=ExampleRNG.from_seed(0, ids)
    )
    art = PyTorchRandomizedSmoothing(
        model=cnn.module, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
        channels_first=True, sample_size=100, scale=SIGMA, alpha=0.001,
    )  # fmt: skip
    np.random.seed(0)  # ART draws its noise from NumPy's global generator
    pred, radius = art.certify(x.numpy(), n=n, batch_size=200)
    for r in (0.0, 0.25, 0.5):
        a = ((ours.pred == y) & (ours.radius >= r) & ~ours.abstained).float().mean().item()
        b = float(((pred == y.numpy()) & (radius >= r) & (pred >= 0)).mean())
        p = max((a + b) / 2, 0.05)
        assert abs(a - b) <= 3 * (2 * p * (1 - p) / n_examples) ** 0.5 + 1e-9, (r, a, b)
    both = (ours.pred.numpy() >= 0) & (pred >= 0)
    assert np.abs(ours.radius.numpy()[both] - radius[both]).mean() < 0.05


def test_agrees_with_art_fast() -> None:
    _art_agreement(40, 300)


@pytest.mark.slow
def test_agrees_with_art() -> None:
    _art_agreement(150, 2000)


def test_noise_drawn_into_the_buffer_equals_gaussian_draws(digits: Any) -> None:
    """sample_counts draws each example's noise straight into the batch buffer, in the layout the
    probe picked; the counts equal those from :func:`gaussian_draws` (the documented streams)
    evaluated one example at a time, for a model whose argmax is exact (no float rounding)."""
    from robustlab.certify.smoothing import DRAW, gaussian_draws

    x, _, ids = digits
    x, ids = x[:7], ids[:7]

    def pixels(z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1)[:, :10]

    model = CallableClassifier(pixels, 10, DOMAIN, version="pixels")
    num, rng = 600, ExampleRNG.from_seed(4, ids)
    keys = rng.keys
    ref = torch.zeros(7, 10, dtype=torch.long)
    for i in range(7):
        for start in range(0, num, DRAW):
            m = min(DRAW, num - start)
            noise = gaussian_draws(keys[i : i + 1], start // DRAW, m, x.shape[1:])[0]
            ref[i] += torch.bincount(pixels(x[i] + SIGMA * noise).argmax(1), minlength=10)
    for batch in ("auto", 1, 37, 256, 5000):
        got = GaussianSmoothing(SIGMA, batch_size=batch).sample_counts(model, x, num, rng)
        assert torch.equal(got, ref), batch


def test_feeder_counts_across_log_flushes() -> None:
    """BatchFeeder logs predictions and counts them when its log fills: a tiny log (many flushes,
    owners split across them) gives the same counts as a direct count."""
    from robustlab.certify.smoothing_batch import BatchFeeder

    g = torch.Generator().manual_seed(0)
    model = CallableClassifier(lambda z: z.flatten(1)[:, :4], 4, Domain(-9.0, 9.0, (1, 2, 2)))
    ref = torch.zeros(5, 4, dtype=torch.long)
    for log, size, group in ((1, 3, 1), (20, 7, 2), (1 << 15, 64, None)):
        counts = torch.zeros(5, 4, dtype=torch.long)
        feed = BatchFeeder(model, counts, size, torch.contiguous_format, (1, 2, 2), torch.float32,
                           torch.device("cpu"), chunk=5, group=group, log=log)  # fmt: skip
        gen = torch.Generator()
        ref.zero_()
        for owner in (0, 3, 1, 3, 4, 0):
            for k in (5, 1, 4):
                seed = int(torch.randint(0, 1 << 30, (1,), generator=g))
                gen.manual_seed(seed)
                noise = torch.randn((k, 1, 2, 2), generator=torch.Generator().manual_seed(seed))
                center = torch.rand((1, 2, 2), generator=g)
                ref[owner] += torch.bincount(
                    (center + 0.5 * noise).flatten(1).argmax(1), minlength=4
                )
                feed.add_normal(center, k, 0.5, owner, gen)
        with torch.no_grad():
            feed.finish()
        assert torch.equal(counts, ref), (log, size, group)
