"""The ``trained`` model (a base model trained by a registered trainer; cached) and untrained bases.

``trained`` is declared like any other model, so every probe, certifier and report works on it::

    models:
      - name: trained
        params:
          base: {name: small-cnn, params: {side: 28}}
          data: {name: fashion-mnist, params: {split: train, limit: 5000}}
          trainer: {name: trades, params: {eps: 0.1, beta: 6}}
          epochs: 10

The suite's replicate seed is the training seed. See :mod:`robustlab.training` and
docs/training.md. ``small-cnn`` and ``mlp`` are *untrained* architectures (weights drawn from
``init_seed``), the usual bases for training from scratch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.rng import seeded
from robustlab.core.types import Domain, NonNegativeInt, Positive, PositiveInt, Seed
from robustlab.models.nets import MLP, SmallCNN
from robustlab.models.torch_adapter import TorchClassifier


def spec_param(kind: str) -> Any:
    """A ``{name, params}`` mapping checked against registry ``kind`` (name and parameters) when
    the ``trained`` model's parameters are validated: a suite is refused before anything runs."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        from robustlab.core.registry import REGISTRIES
        from robustlab.training.api import component

        try:
            component(value, kind, REGISTRIES[kind])
        except ConfigError as e:
            raise ValueError(f"a valid {kind[:-1]} spec ({e})") from None
        return value

    return Annotated[dict[str, Any], AfterValidator(check)]


@models.register("trained")
def trained(
    base: spec_param("models"),  # type: ignore[valid-type]
    data: spec_param("datasets") | None = None,  # type: ignore[valid-type]
    trainer: spec_param("trainers") | None = None,  # type: ignore[valid-type]
    seed: Seed = 0,
    epochs: PositiveInt = 10,
    holdout: NonNegativeInt = 256,
    eval_eps: Positive | None = None,
    eval_steps: PositiveInt = 10,
    on_co: Literal["warn", "stop", "restore"] = "warn",
    schedule: Literal["constant", "slow-start-fast-decay"] = "constant",
) -> TorchClassifier:
    """``base`` ({name, params}: a registered torch model, its weights the initialisation) trained
    on ``data`` (default: 5,000 Fashion-MNIST train images) by ``trainer`` ({name, params};
    default ``standard``) for ``epochs`` under ``seed``; cached, resumable, with ``provenance``.

    ``holdout`` examples are kept out of training and evaluated after every epoch (clean, FGSM and
    PGD with ``eval_steps`` steps at ``eval_eps``, default the trainer's eps); ``on_co``: what to do
    on catastrophic overfitting (warn, stop, or restore the best epoch and stop). ``schedule``: the
    learning rate over the batches, ``constant`` (the trainer's ``lr``) or ``slow-start-fast-decay``
    (S36 adversarial fine-tuning, Jeddi et al., 2020: linear rise from 0 to ``lr`` over the first
    60 % of the batches, then a linear fall to 0).
    """
    from robustlab.training.api import build

    return build(
        base, data, trainer, seed, epochs, holdout, eval_eps, eval_steps, on_co, schedule
    )  # fmt: skip


def _untrained(net: torch.nn.Module, classes: int, shape: tuple[int, ...], name: str) -> Any:
    return TorchClassifier(net.eval(), classes, Domain(0.0, 1.0, shape), name=name)


@models.register("small-cnn")
def small_cnn(
    in_ch: PositiveInt = 1,
    side: PositiveInt = 28,
    num_classes: PositiveInt = 10,
    width: PositiveInt = 16,
    init_seed: Seed = 0,
    height: PositiveInt | None = None,
) -> TorchClassifier:
    """An *untrained* BatchNorm CNN (robustlab's SmallCNN) for ``side`` x ``side`` images in
    [0, 1] with ``in_ch`` channels (``height`` x ``side`` for non-square images), weights drawn
    under ``init_seed``: a base for ``trained``."""
    with seeded(init_seed):
        net = SmallCNN(in_ch, num_classes, side, width, height)
    return _untrained(net, num_classes, (in_ch, height or side, side), "small-cnn")


@models.register("mlp")
def mlp(
    in_ch: PositiveInt = 1,
    side: PositiveInt = 28,
    num_classes: PositiveInt = 10,
    hidden: PositiveInt = 128,
    init_seed: Seed = 0,
    height: PositiveInt | None = None,
) -> TorchClassifier:
    """An *untrained* 2-hidden-layer ReLU MLP over flattened ``in_ch`` x ``side`` x ``side``
    images in [0, 1] (``height`` x ``side`` for non-square images), weights drawn under
    ``init_seed``: a base for ``trained``."""
    with seeded(init_seed):
        net = MLP(in_ch * (height or side) * side, hidden, num_classes)
    return _untrained(net, num_classes, (in_ch, height or side, side), "mlp")
