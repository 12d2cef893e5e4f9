"""Registered digits models made for randomized smoothing: noise-trained, dual-view, denoised.

All train on scikit-learn digits (train split) in seconds and are cached like ``digits-cnn``
(:func:`~robustlab.models.training.cached_module`); ``seed`` is the training seed (replicate).

Example::

    clf = models.create("digits-cnn-noise", {"sigma": 0.25})
    cert = GaussianSmoothing(sigma=0.25).certify(clf, x, y, rng=rng)
"""

from __future__ import annotations

from functools import partial

from torch import nn

from robustlab.core.registry import datasets, models
from robustlab.core.types import Domain, NonNegative, Positive, PositiveInt, Seed
from robustlab.defenses.denoiser import ResidualDenoiser, train_denoiser
from robustlab.defenses.noise_training import train_noisy
from robustlab.models.nets import SmallCNN
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.training import cached_module, train_classifier

DOMAIN = Domain(0.0, 1.0, (1, 8, 8))


def _noise_cnn(name: str, seed: int, sigma: float, epochs: int, consistency: float, view: str):
    make = partial(SmallCNN, 1, 10, 8, 16)
    data = datasets.get("digits")(split="train")
    train = partial(
        train_noisy, make, data, seed=seed, sigma=sigma, epochs=epochs,
        consistency=consistency, view=view,
    )  # fmt: skip
    key = {"name": name, "seed": seed, "sigma": sigma, "epochs": epochs, "c": consistency, "v": 1}
    return TorchClassifier(cached_module(key, make, train), 10, DOMAIN, name=name)


@models.register("digits-cnn-noise")
def digits_cnn_noise(
    seed: Seed = 0, sigma: Positive = 0.25, epochs: PositiveInt = 20, consistency: NonNegative = 0.0
) -> TorchClassifier:
    """SmallCNN trained with unclipped Gaussian noise of ``sigma`` (Cohen et al., 2019), optionally
    with consistency regularization of weight ``consistency`` (Jeong & Shin, 2020); cached."""
    return _noise_cnn("digits-cnn-noise", seed, sigma, epochs, consistency, "full")


@models.register("digits-cnn-dual-noise")
def digits_cnn_dual_noise(
    seed: Seed = 0, sigma: Positive = 0.25, epochs: PositiveInt = 20, consistency: NonNegative = 0.0
) -> TorchClassifier:
    """SmallCNN trained on noisy up-sampled half images, the base model of ``dual-smoothing``."""
    return _noise_cnn("digits-cnn-dual-noise", seed, sigma, epochs, consistency, "dual")


@models.register("digits-cnn-denoised")
def digits_cnn_denoised(
    seed: Seed = 0, sigma: Positive = 0.25, epochs: PositiveInt = 30, width: PositiveInt = 32
) -> TorchClassifier:
    """Denoised smoothing base model: an MSE-trained denoiser for ``sigma`` in front of the *clean*
    ``digits-cnn`` of the same seed (Salman et al., 2020); both cached."""
    data = datasets.get("digits")(split="train")
    make_d = partial(ResidualDenoiser, 1, width)
    train_d = partial(train_denoiser, data, sigma=sigma, seed=seed, epochs=epochs, width=width)
    key = {"name": "digits-denoiser", "seed": seed, "sigma": sigma, "epochs": epochs, "w": width}
    den = cached_module(key, make_d, train_d)
    make_c = partial(SmallCNN, 1, 10, 8, 16)
    train_c = partial(train_classifier, make_c, data, seed=seed, epochs=20)
    key_c = {"name": "digits-cnn", "seed": seed, "epochs": 20, "width": 16, "v": 1}
    clf = cached_module(key_c, make_c, train_c)
    return TorchClassifier(nn.Sequential(den, clf), 10, DOMAIN, name="digits-cnn-denoised")
