"""Registered digits models made for randomized smoothing: noise-trained, dual-view, denoised.

Each is a thin factory over robustlab's one training mechanism: it builds a ``trained`` spec (base,
data, trainer, seed, epochs) and returns :func:`robustlab.training.api.train` of it, so the model is
cached by content hash, resumable and carries its provenance (the report's Training provenance
section shows it). All train on scikit-learn digits (the whole train split: ``holdout: 0``) in
seconds; ``seed`` is the training seed (replicate) and the base's ``init_seed``.

``denoised`` is the base model of denoised smoothing: an untrained residual denoiser in front of
any registered torch classifier (the trainer ``denoiser`` trains only the denoiser).

Example::

    clf = models.create("digits-cnn-noise", {"sigma": 0.25})
    cert = GaussianSmoothing(sigma=0.25).certify(clf, x, y, rng=rng)
    clf.provenance["spec"]["trainer"]   # {'name': 'noise', 'params': {'sigma': 0.25, ...}}
"""

from __future__ import annotations

from typing import Any

from robustlab.core.errors import CapabilityError
from robustlab.core.registry import models
from robustlab.core.rng import seeded
from robustlab.core.types import NonNegative, Positive, PositiveInt, Seed
from robustlab.defenses.denoiser import Denoised, ResidualDenoiser
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param

DIGITS_TRAIN = {"name": "digits", "params": {"split": "train"}}
LR, BATCH = 3e-3, 64  # the settings these models were tuned with


def train_registered(name: str, spec: dict[str, Any]) -> TorchClassifier:
    """``robustlab.training.api.train(spec)`` named ``name`` (the registered model's name)."""
    from robustlab.training.api import train

    clf = train(spec)
    clf.name = name
    return clf


def _noise_cnn(name: str, seed: int, sigma: float, epochs: int, consistency: float, view: str):
    trainer = {
        "sigma": sigma,
        "consistency": consistency,
        "view": view,
        "lr": LR,
        "batch_size": BATCH,
    }
    spec = {
        "base": {"name": "small-cnn", "params": {"side": 8, "init_seed": seed}},
        "data": DIGITS_TRAIN,
        "trainer": {"name": "noise", "params": trainer},
        "seed": seed, "epochs": epochs, "holdout": 0,
    }  # fmt: skip
    return train_registered(name, spec)


@models.register("digits-cnn-noise")
def digits_cnn_noise(
    seed: Seed = 0, sigma: Positive = 0.25, epochs: PositiveInt = 20, consistency: NonNegative = 0.0
) -> TorchClassifier:
    """``small-cnn`` (side 8) trained by the ``noise`` trainer on digits with unclipped Gaussian
    noise of ``sigma`` (Cohen et al., 2019), optionally with consistency regularization of weight
    ``consistency`` (Jeong & Shin, 2020); a cached ``trained`` model."""
    return _noise_cnn("digits-cnn-noise", seed, sigma, epochs, consistency, "full")


@models.register("digits-cnn-dual-noise")
def digits_cnn_dual_noise(
    seed: Seed = 0, sigma: Positive = 0.25, epochs: PositiveInt = 20, consistency: NonNegative = 0.0
) -> TorchClassifier:
    """``small-cnn`` trained on noisy up-sampled half images (``noise`` trainer, ``view: dual``),
    the base model of ``dual-smoothing``; a cached ``trained`` model."""
    return _noise_cnn("digits-cnn-dual-noise", seed, sigma, epochs, consistency, "dual")


@models.register("digits-cnn-denoised")
def digits_cnn_denoised(
    seed: Seed = 0, sigma: Positive = 0.25, epochs: PositiveInt = 30, width: PositiveInt = 32
) -> TorchClassifier:
    """Denoised smoothing base model (Salman et al., 2020): a denoiser for ``sigma`` trained by the
    ``denoiser`` trainer (MSE) in front of the frozen *clean* ``digits-cnn`` of the same seed."""
    base = {"classifier": {"name": "digits-cnn", "params": {"seed": seed}}, "width": width,
            "init_seed": seed}  # fmt: skip
    spec = {
        "base": {"name": "denoised", "params": base},
        "data": DIGITS_TRAIN,
        "trainer": {"name": "denoiser", "params": {"sigma": sigma, "lr": LR, "batch_size": BATCH}},
        "seed": seed, "epochs": epochs, "holdout": 0,
    }  # fmt: skip
    return train_registered("digits-cnn-denoised", spec)


@models.register("denoised")
def denoised(
    classifier: spec_param("models"),  # type: ignore[valid-type]
    width: PositiveInt = 32,
    init_seed: Seed = 0,
) -> TorchClassifier:
    """An *untrained* residual denoiser (:class:`~robustlab.defenses.denoiser.ResidualDenoiser`,
    ``width`` channels, weights drawn under ``init_seed``) in front of the registered torch image
    classifier ``classifier`` ({name, params}): the base of the ``denoiser`` trainer (denoised
    smoothing, Salman et al., 2020). Same classes and input domain as the classifier."""
    name, params = classifier["name"], classifier.get("params") or {}
    clf = models.create(name, params)
    net, shape = getattr(clf, "module", None), getattr(clf.domain, "shape", None)
    if net is None or not getattr(clf.capabilities, "grad", False):
        raise CapabilityError(f"denoised: classifier {name!r} is not a white-box torch model")
    if shape is None or len(shape) != 3 or shape[0] is None:
        raise CapabilityError(
            f"denoised: classifier {name!r} must take [C, H, W] images, its domain is {shape}"
        )
    with seeded(init_seed):
        den = ResidualDenoiser(shape[0], width)
    module = Denoised(den, net, clf.mean, clf.std).to(clf.device)
    return TorchClassifier(
        module.eval(), clf.num_classes, clf.domain, device=str(clf.device), name="denoised"
    )
