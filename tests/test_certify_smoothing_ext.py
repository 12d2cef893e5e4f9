"""Noise training, sequential, dual and denoised smoothing: validity, references, soundness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from robustlab.certify.dual import DualSmoothing, dual_radius, split_halves, upsample_half
from robustlab.certify.sequential import SequentialSmoothing, look_schedule
from robustlab.certify.smoothing import GaussianSmoothing, lower_confidence_bound
from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.registry import certifiers, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.models import CallableClassifier
from robustlab.testing import check_certifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIGMA = 0.25
N_TEST = 40


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    assert d.ids is not None
    return d.x[:N_TEST], d.y[:N_TEST], d.ids[:N_TEST]


@pytest.fixture(scope="module")
def noise_cnn() -> Any:
    return models.create("digits-cnn-noise", {"sigma": SIGMA})


def certified_acc(cert: Any, y: torch.Tensor, r: float) -> float:
    return ((cert.pred == y) & (cert.radius >= r)).float().mean().item()


def test_noise_training_makes_smoothing_worthwhile(noise_cnn: Any, digits: Any) -> None:
    x, y, ids = digits
    sm = GaussianSmoothing(SIGMA, n0=64, n=300)
    clean = sm.certify(models.create("digits-cnn"), x, y, rng=ExampleRNG.from_seed(0, ids))
    noisy = sm.certify(noise_cnn, x, y, rng=ExampleRNG.from_seed(0, ids))
    assert (noise_cnn.logits(x).argmax(1) == y).float().mean() > 0.9  # still accurate when clean
    print(
        "certified acc at 0.4: clean",
        certified_acc(clean, y, 0.4),
        "noise",
        certified_acc(noisy, y, 0.4),
    )
    assert certified_acc(noisy, y, 0.4) > certified_acc(clean, y, 0.4) + 0.15
    assert certified_acc(noisy, y, 0.25) > 0.75


# ---- sequential -------------------------------------------------------------------------------


def test_confidence_sequence_is_anytime_valid() -> None:
    """P(some look's lower bound exceeds p) <= alpha over 4000 simulated Bernoulli streams."""
    alpha, looks, streams = 0.05, look_schedule(16, 4096), 4000
    gen = np.random.default_rng(0)
    for p in (0.6, 0.9, 0.99):
        k = np.zeros(streams, dtype=np.int64)
        ever, prev = np.zeros(streams, dtype=bool), 0
        for n_j in looks:
            k += gen.binomial(n_j - prev, p, size=streams)
            prev = n_j
            low = lower_confidence_bound(torch.from_numpy(k), n_j, alpha / len(looks))
            ever |= (low > p).numpy()
        bound = stats.binom.ppf(1 - 1e-4, streams, alpha) / streams  # alpha + binomial tolerance
        assert ever.mean() <= bound, f"p={p}: {ever.mean():.4f} > {bound:.4f}"


def test_sequential_matches_fixed_n_with_fewer_samples(noise_cnn: Any, digits: Any) -> None:
    x, y, ids = digits
    x, y, ids = x[:24], y[:24], ids[:24]
    n, r = 2000, 0.5
    fixed = GaussianSmoothing(SIGMA, n0=64, n=n).certify(
        noise_cnn, x, y, rng=ExampleRNG.from_seed(1, ids)
    )
    seq = SequentialSmoothing(SIGMA, n0=64, n=n, radius=r).certify(
        noise_cnn, x, y, rng=ExampleRNG.from_seed(1, ids)
    )
    assert abs(certified_acc(seq, y, r) - certified_acc(fixed, y, r)) <= 0.1
    assert ((seq.radius >= r) == (fixed.radius >= r)).float().mean() >= 0.9
    ok = ~seq.abstained & ~fixed.abstained
    assert torch.equal(seq.pred[ok], fixed.pred[ok])
    assert seq.extra["samples"].float().mean() < (64 + n) / 2  # ratio grows with n (benchmark)
    assert (seq.extra["samples"] <= 64 + n).all()


def test_sequential_constant_model_stops_at_first_decisive_look(digits: Any) -> None:
    x, y, ids = digits
    model = CallableClassifier(lambda z: torch.eye(10)[[3] * len(z)], 10, version="c3")
    seq = SequentialSmoothing(0.5, n0=10, n=10_000, alpha=0.01, radius=1.0, first=64)
    cert = seq.certify(model, x, y, rng=ExampleRNG.from_seed(0, ids))
    looks = look_schedule(64, 10_000)
    target = stats.norm.cdf(1.0 / 0.5)
    need = next(n for n in looks if (0.01 / len(looks)) ** (1 / n) > target)  # k = n: CP = a^(1/n)
    assert (cert.extra["samples"] == 10 + need).all()
    expected = 0.5 * stats.norm.ppf((0.01 / len(looks)) ** (1 / need))
    torch.testing.assert_close(cert.radius.double(), torch.full((N_TEST,), expected).double())


def test_sequential_soundness_contract(noise_cnn: Any, digits: Any) -> None:
    x, y, _ = digits
    seq = SequentialSmoothing(SIGMA, n0=64, n=1000, radius=0.4)
    cert = check_certifier(seq, noise_cnn, x[:20], y[:20], predict_kwargs={"n": 200})
    assert (~cert.abstained).float().mean() > 0.7


# ---- dual -------------------------------------------------------------------------------------


def test_halves_partition_the_image() -> None:
    x = torch.arange(2 * 64.0).view(2, 1, 8, 8)
    a, b = split_halves(x)
    assert a.shape == (2, 1, 8, 4)
    assert sorted(torch.cat([a.flatten(1), b.flatten(1)], 1)[0].tolist()) == list(range(64))
    assert upsample_half(a).shape == x.shape
    with pytest.raises(DomainError, match="even"):
        split_halves(torch.zeros(1, 1, 8, 7))


def test_dual_radius_closed_form_and_soundness() -> None:
    p = torch.tensor([0.6, 0.9, 0.99, 0.999])
    r = dual_radius(p, p, 0.5)
    ref = torch.from_numpy(np.sqrt(2) * 0.5 * stats.norm.ppf(p.numpy())).float()
    assert (r <= ref + 1e-6).all() and (r >= 0.995 * ref).all()  # sqrt(2) x Cohen at equal p
    # sound: the averaged worst-case vote stays > 1/2 on the whole circle of the radius ...
    pa, pb = torch.tensor([0.99865, 0.3, 0.8]), torch.tensor([0.504, 0.9, 0.7])
    r = dual_radius(pa, pb, 1.0).double()
    t = torch.linspace(0, np.pi / 2, 20001, dtype=torch.float64)[None]
    a, b = (torch.special.ndtri(v.double())[:, None] for v in (pa, pb))
    vote = lambda u: torch.special.ndtr(a - u * t.cos()) + torch.special.ndtr(b - u * t.sin())  # noqa: E731
    assert (vote(r[:, None]) > 1).all()
    assert (vote(1.01 * r[:, None]).min(1).values < 1).all()  # ... and is tight (grid error < 1%)
    # the paper code's sqrt(R_A^2 + R_B^2) over-claims for unequal halves under the average rule
    assert float(r[0]) < float(torch.hypot(a[0, 0], b[0, 0])) - 0.5
    assert dual_radius(torch.tensor([0.5]), torch.tensor([0.5]), 1.0).item() == 0


def test_dual_is_sound_on_a_dual_trained_model(digits: Any) -> None:
    x, y, _ = digits
    dual_model = models.create("digits-cnn-dual-noise", {"sigma": SIGMA})
    drs = DualSmoothing(SIGMA, n0=64, n=300)
    cert = check_certifier(drs, dual_model, x[:20], y[:20], predict_kwargs={"n": 100})
    assert certified_acc(cert, y[:20], 0.0) > 0.5


def test_dual_constant_model_gets_sqrt2_radius(digits: Any) -> None:
    """All votes for one class: p_lower = (alpha/2)^(1/n) per half, radius sqrt(2) sigma Phi^-1."""
    x, y, ids = digits
    model = CallableClassifier(lambda z: torch.eye(10)[[7] * len(z)], 10, version="c7")
    cert = DualSmoothing(0.5, n0=10, n=400, alpha=0.01).certify(
        model, x, y, rng=ExampleRNG.from_seed(0, ids)
    )
    expected = np.sqrt(2) * 0.5 * stats.norm.ppf(0.005 ** (1 / 400))
    assert (cert.pred == 7).all()
    assert ((cert.radius <= expected + 1e-5) & (cert.radius >= 0.999 * expected)).all()


# ---- denoised ---------------------------------------------------------------------------------


def test_denoiser_helps_a_clean_classifier(digits: Any) -> None:
    x, y, ids = digits
    sm = GaussianSmoothing(SIGMA, n0=32, n=200)
    plain = sm.certify(models.create("digits-cnn"), x, y, rng=ExampleRNG.from_seed(2, ids))
    den = sm.certify(models.create("digits-cnn-denoised", {"sigma": SIGMA}), x, y,
                     rng=ExampleRNG.from_seed(2, ids))  # fmt: skip
    assert certified_acc(den, y, 0.25) > certified_acc(plain, y, 0.25) + 0.1


def test_denoiser_trainer_trains_only_the_denoiser() -> None:
    """``digits-cnn-denoised`` is a ``trained`` spec of the ``denoiser`` trainer: its classifier
    (weights and BatchNorm running statistics) is bit-identical to the clean ``digits-cnn``, only
    the denoiser moved, and the denoiser removes noise (MSE to the clean test images below half
    that of the noisy ones). The ``stability`` objective (2 epochs at sigma 0.5) also leaves the
    classifier intact and raises its accuracy on noisy test images (measured +0.09 / +0.14 /
    +0.14 for seeds 0 / 1 / 2); a base without a denoiser is refused."""
    from robustlab.training.api import train

    test = datasets.get("digits")(split="test")
    den = models.create("digits-cnn-denoised", {"sigma": SIGMA})
    clean = models.create("digits-cnn")
    frozen = den.module.classifier.state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in clean.module.state_dict().items())
    init = models.create("denoised", {"classifier": {"name": "digits-cnn"}, "init_seed": 0})
    assert den.provenance["spec"]["trainer"]["name"] == "denoiser"
    w = "residual.0.weight"
    assert not torch.equal(
        init.module.denoiser.state_dict()[w], den.module.denoiser.state_dict()[w]
    )
    g = torch.Generator().manual_seed(5)
    noisy = test.x + SIGMA * torch.randn(test.x.shape, generator=g)
    with torch.no_grad():
        mse_noisy = float(((noisy - test.x) ** 2).mean())
        mse_den = float(((den.module.denoiser(noisy) - test.x) ** 2).mean())
    assert mse_den < 0.5 * mse_noisy, (mse_den, mse_noisy)
    spec = {
        "base": {"name": "denoised", "params": {"classifier": {"name": "digits-cnn"}}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "denoiser", "params": {"sigma": 0.5, "objective": "stability",
                                                   "lr": 3e-3, "batch_size": 64}},
        "epochs": 2, "holdout": 0,
    }  # fmt: skip
    stab = train(spec)
    frozen = stab.module.classifier.state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in clean.module.state_dict().items())
    noisy = test.x + 0.5 * torch.randn(test.x.shape, generator=g)
    with torch.no_grad():
        acc_plain = float((clean.logits(noisy).argmax(1) == test.y).float().mean())
        acc_stab = float((stab.logits(noisy).argmax(1) == test.y).float().mean())
    assert acc_stab > acc_plain + 0.05, (acc_plain, acc_stab)
    with pytest.raises(ConfigError, match="'denoised' model"):
        train({**spec, "base": {"name": "small-cnn", "params": {"side": 8}}})
    with pytest.raises(ConfigError, match="did you mean 'digits-cnn'"):
        models.create("denoised", {"classifier": {"name": "digits-cnnn"}})


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("smoothing-sequential", {"sigma": 0.0}, "sigma"),
        ("smoothing-sequential", {"alpha": 1.5}, "alpha"),
        ("smoothing-sequential", {"n0": 500, "n": 100}, "n0"),
        ("smoothing-sequential", {"radius": -1.0}, "radius"),
        ("dual-smoothing", {"sigma": -1.0}, "sigma"),
        ("dual-smoothing", {"alpha": 0.0}, "alpha"),
    ],
)
def test_bad_parameters(name: str, params: dict[str, Any], match: str, digits: Any) -> None:
    x, y, ids = digits
    model = CallableClassifier(lambda z: torch.zeros(len(z), 10), 10)
    with pytest.raises(ConfigError, match=match):
        certifiers.create(name, params).certify(
            model, x[:2], y[:2], rng=ExampleRNG.from_seed(0, ids[:2])
        )
