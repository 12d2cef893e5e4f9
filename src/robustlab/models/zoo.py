"""Registered model factories: small models trained locally on bundled data, and model files."""

from __future__ import annotations

from functools import partial

from torch import nn

from robustlab.core.registry import datasets, models
from robustlab.core.types import Domain, Positive, PositiveInt, Seed
from robustlab.models.loading import load_model_file
from robustlab.models.nets import MLP, SmallCNN
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.training import cached_module, train_classifier


@models.register("digits-cnn")
def digits_cnn(
    seed: Seed = 0, epochs: PositiveInt = 20, width: PositiveInt = 16
) -> TorchClassifier:
    """A BatchNorm CNN trained on scikit-learn digits (train split) in a few seconds; cached."""
    make = partial(SmallCNN, 1, 10, 8, width)

    def train() -> nn.Module:  # the training data is loaded only on a cache miss
        data = datasets.get("digits")(split="train")
        return train_classifier(make, data, seed=seed, epochs=epochs)

    key = {"name": "digits-cnn", "seed": seed, "epochs": epochs, "width": width, "v": 1}
    net = cached_module(key, make, train)
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 8, 8)), name="digits-cnn")


@models.register("digits-mlp")
def digits_mlp(
    seed: Seed = 0, epochs: PositiveInt = 30, hidden: PositiveInt = 64
) -> TorchClassifier:
    """A 2-hidden-layer ReLU MLP trained on scikit-learn digits (train split); cached."""
    make = partial(MLP, 64, hidden, 10)

    def train() -> nn.Module:  # the training data is loaded only on a cache miss
        data = datasets.get("digits")(split="train")
        return train_classifier(make, data, seed=seed, epochs=epochs)

    key = {"name": "digits-mlp", "seed": seed, "epochs": epochs, "hidden": hidden, "v": 1}
    net = cached_module(key, make, train)
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 8, 8)), name="digits-mlp")


@models.register("digits-logreg")
def digits_logreg(seed: Seed = 0, C: Positive = 1.0) -> object:
    """scikit-learn logistic regression on digits (black-box: probabilities only)."""
    from sklearn.linear_model import LogisticRegression

    from robustlab.models.sklearn_adapter import SklearnClassifier

    d = datasets.get("digits")(split="train")
    est = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    est.fit(d.x.reshape(len(d), -1).numpy(), d.y.numpy())
    return SklearnClassifier(est, Domain(0.0, 1.0, (1, 8, 8)))


@models.register("file")
def model_file(
    path: str,
    num_classes: int | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    allow_pickle: bool = False,
) -> object:
    """A model file: TorchScript (.pt/.pth), ONNX (.onnx) or, only with ``allow_pickle``, a pickle."""
    return load_model_file(
        path, num_classes=num_classes, domain=Domain(lo, hi), allow_pickle=allow_pickle
    )
