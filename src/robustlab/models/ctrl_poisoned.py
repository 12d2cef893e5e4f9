"""The ``ctrl-poisoned`` model: a classifier trained (by the ``trained`` mechanism, cached) on
CTRL-poisoned data (S26: Li et al., ICCV 2023; :mod:`robustlab.data.ctrl_poisoned`).

Supervised variant by default (``mode: dirty-label``: 1 % of the training images, drawn outside
the target class, carry the frequency trigger and the target label). The defaults are the ones
measured in docs/diagnose-backdoor.md on grey 28 x 28 Fashion-MNIST: the paper's trigger is
planted in the two chroma channels of 32 x 32 colour images at magnitude 50-100; a grey image has
only its luminance, where magnitude 100 over one 28 x 28 window reached no backdoor in 5-15 epochs,
so the default plants the paper's two frequencies (mid and highest) in each 14 x 14 window at
magnitude 300. ``rate: 0`` trains the same model on clean data (the clean-accuracy reference).

Example (YAML)::

    models:
      - name: ctrl-poisoned
        params: {target: 0, rate: 0.01, epochs: 5}
      - name: ctrl-poisoned          # the clean reference: same data, nothing poisoned
        label: clean
        params: {rate: 0.0}
"""

from __future__ import annotations

from typing import Any, Literal

from robustlab.core.registry import models
from robustlab.core.types import NonNegativeInt, Positive, PositiveInt, Rate, Seed
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param

DEFAULT_DATA = {"name": "fashion-mnist", "params": {"split": "train", "limit": 10000}}
DEFAULT_BASE = {"name": "small-cnn", "params": {"side": 28}}


@models.register("ctrl-poisoned")
def ctrl_poisoned_model(
    data: spec_param("datasets") | None = None,  # type: ignore[valid-type]
    base: spec_param("models") | None = None,  # type: ignore[valid-type]
    target: NonNegativeInt = 0,
    rate: Rate = 0.01,
    mode: Literal["dirty-label", "clean-label"] = "dirty-label",
    magnitude: Positive = 300.0,
    window: PositiveInt | None = 14,
    positions: list[list[int]] | None = None,
    channels: list[int] | None = None,
    poison_seed: Seed = 0,
    seed: Seed = 0,
    epochs: PositiveInt = 5,
    holdout: NonNegativeInt = 0,
) -> TorchClassifier:
    """``base`` (default: small-cnn for 28 x 28) trained by the ``standard`` trainer for
    ``epochs`` under ``seed`` on ``data`` (default: the first 10,000 Fashion-MNIST training
    images) poisoned by ``ctrl-poisoned`` (``target``, ``rate``, ``mode``, trigger ``magnitude``,
    ``window``, ``positions``, ``channels``, ``poison_seed``); cached like ``trained``. Its
    ``provenance["spec"]["data"]`` names the poisoned set, which the ``backdoor`` diagnosis reads.
    """
    from robustlab.training.api import build

    poisoned: dict[str, Any] = {
        "name": "ctrl-poisoned",
        "params": {
            "data": data or DEFAULT_DATA, "target": target, "rate": rate, "mode": mode,
            "magnitude": magnitude, "window": window, "positions": positions,
            "channels": channels, "seed": poison_seed,
        },
    }  # fmt: skip
    clf = build(base or DEFAULT_BASE, poisoned, None, seed, epochs, holdout, None, 10, "warn")
    clf.name = "ctrl-poisoned" if rate > 0 else "ctrl-clean"
    return clf
