"""Registered certifiably trained models: digits nets trained with IBP (Gowal et al., 2018); cached.

``digits-mlp-ibp`` (64-32-32-10 ReLU MLP) and ``digits-cnn-ibp`` (two convolutions, no BatchNorm)
are trained on the scikit-learn digits train split with :func:`robustlab.defenses.ibp_training.
train_ibp` at Linf radius ``eps`` (inputs in [0, 1]); the MLP is small enough for the exact MILP
verifier (:mod:`robustlab.certify.milp`).

Example::

    clf = models.create("digits-mlp-ibp", {"eps": 0.1})
    IntervalBounds(eps=0.1).certify(clf, x, y, rng=rng)
"""

from __future__ import annotations

from functools import partial

from torch import nn

from robustlab.core.registry import datasets, models
from robustlab.core.types import Domain, NonNegative, PositiveInt, Seed
from robustlab.models.nets import MLP
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.training import cached_module


class IBPCNN(nn.Module):
    """Conv(8, 3x3) - ReLU - Conv(16, 4x4, stride 2) - ReLU - Linear(64) - ReLU - Linear; no BN."""

    def __init__(
        self, in_ch: int = 1, num_classes: int = 10, side: int = 8, width: int = 8
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * (side // 2) ** 2, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)


def _train(
    name: str, make: partial, seed: int, eps: float, epochs: int, size: int
) -> TorchClassifier:
    from robustlab.defenses.ibp_training import train_ibp

    data = datasets.get("digits")(split="train")
    train = partial(train_ibp, make, data, seed=seed, eps=eps, epochs=epochs, ramp=epochs // 2)
    key = {"name": name, "seed": seed, "eps": eps, "epochs": epochs, "size": size, "v": 1}
    net = cached_module(key, make, train)
    return TorchClassifier(net, 10, Domain(0.0, 1.0, (1, 8, 8)), name=name)


@models.register("digits-mlp-ibp")
def digits_mlp_ibp(
    seed: Seed = 0, eps: NonNegative = 0.1, epochs: PositiveInt = 30, hidden: PositiveInt = 32
) -> TorchClassifier:
    """A 64-hidden-hidden-10 ReLU MLP trained with IBP at Linf ``eps`` on digits; cached."""
    return _train("digits-mlp-ibp", partial(MLP, 64, hidden, 10), seed, eps, epochs, hidden)


@models.register("digits-cnn-ibp")
def digits_cnn_ibp(
    seed: Seed = 0, eps: NonNegative = 0.1, epochs: PositiveInt = 20, width: PositiveInt = 8
) -> TorchClassifier:
    """A small BatchNorm-free CNN trained with IBP at Linf ``eps`` on digits; cached."""
    return _train("digits-cnn-ibp", partial(IBPCNN, 1, 10, 8, width), seed, eps, epochs, width)
