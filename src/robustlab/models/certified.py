"""Registered certifiably trained models: digits nets trained with IBP (Gowal et al., 2018); cached.

``digits-mlp-ibp`` (64-hidden-hidden-10 ReLU MLP, the ``mlp`` base) and ``digits-cnn-ibp`` (two
convolutions, no BatchNorm: the ``ibp-cnn`` base) are thin factories over robustlab's one training
mechanism: a ``trained`` spec with the ``ibp`` trainer at Linf radius ``eps`` (inputs in [0, 1]) on
the whole scikit-learn digits train split (``holdout: 0``), returned by
:func:`robustlab.training.api.train` (cached by content hash, resumable, with provenance). The MLP is
small enough for the exact MILP verifier (:mod:`robustlab.certify.milp`).

Example::

    clf = models.create("digits-mlp-ibp", {"eps": 0.1})
    IntervalBounds(eps=0.1).certify(clf, x, y, rng=rng)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustlab.core.registry import models
from robustlab.core.rng import seeded
from robustlab.core.types import Domain, Positive, PositiveInt, Seed
from robustlab.models.smoothing_zoo import BATCH, DIGITS_TRAIN, LR, train_registered
from robustlab.models.torch_adapter import TorchClassifier


class IBPCNN(nn.Module):
    """Conv(w, 3x3) - ReLU - Conv(2w, 4x4, stride 2) - ReLU - Linear(64) - ReLU - Linear; no BN.

    For ``side`` x ``side`` images."""

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


@models.register("ibp-cnn")
def ibp_cnn(
    in_ch: PositiveInt = 1,
    side: PositiveInt = 8,
    num_classes: PositiveInt = 10,
    width: PositiveInt = 8,
    init_seed: Seed = 0,
) -> TorchClassifier:
    """An *untrained* BatchNorm-free CNN (:class:`IBPCNN`) for ``side`` x ``side`` images in [0, 1]
    with ``in_ch`` channels, weights drawn under ``init_seed``: an IBP-traceable base for
    ``trained`` with the ``ibp`` trainer."""
    with seeded(init_seed):
        net = IBPCNN(in_ch, num_classes, side, width)
    return TorchClassifier(
        net.eval(), num_classes, Domain(0.0, 1.0, (in_ch, side, side)), name="ibp-cnn"
    )


def _ibp(name: str, base: dict[str, Any], seed: int, eps: float, epochs: int) -> TorchClassifier:
    trainer = {"eps": eps, "warmup": 3, "ramp": epochs // 2, "lr": LR, "batch_size": BATCH}
    spec = {
        "base": base, "data": DIGITS_TRAIN, "trainer": {"name": "ibp", "params": trainer},
        "seed": seed, "epochs": epochs, "holdout": 0,
    }  # fmt: skip
    return train_registered(name, spec)


@models.register("digits-mlp-ibp")
def digits_mlp_ibp(
    seed: Seed = 0, eps: Positive = 0.1, epochs: PositiveInt = 30, hidden: PositiveInt = 32
) -> TorchClassifier:
    """The ``mlp`` base (64-hidden-hidden-10 ReLU) trained by the ``ibp`` trainer at Linf ``eps``
    on digits (3 warm-up epochs, then eps/kappa ramps over ``epochs // 2``); cached."""
    base = {"name": "mlp", "params": {"side": 8, "hidden": hidden, "init_seed": seed}}
    return _ibp("digits-mlp-ibp", base, seed, eps, epochs)


@models.register("digits-cnn-ibp")
def digits_cnn_ibp(
    seed: Seed = 0, eps: Positive = 0.1, epochs: PositiveInt = 20, width: PositiveInt = 8
) -> TorchClassifier:
    """The ``ibp-cnn`` base (BatchNorm-free) trained by the ``ibp`` trainer at Linf ``eps`` on
    digits (3 warm-up epochs, then eps/kappa ramps over ``epochs // 2``); cached."""
    base = {"name": "ibp-cnn", "params": {"width": width, "init_seed": seed}}
    return _ibp("digits-cnn-ibp", base, seed, eps, epochs)
