"""Registered pre-processing defences around any torch model, ready for adaptive attacks.

* ``quantized-input``: bit-depth reduction to ``levels`` grey levels (non-differentiable). With
  ``bpda: true`` (the default) gradient attacks see the identity's gradient through the step
  (BPDA, Athalye et al., 2018); ``bpda: false`` differentiates the rounding itself (zero gradient:
  what a naive evaluation does, and what the report's gradient-masking checks flag).
* ``noisy-input``: additive Gaussian noise of ``sigma`` on every query (randomized).
* ``resize-pad-input``: random resize-and-pad (Xie et al., 2018; randomized).

Randomized models declare ``randomized = True`` and ``eot`` (the number of draws a gradient
attack averages over, Expectation over Transformation; ``1`` = no EOT): every white-box attack
the runner runs on them goes through :class:`robustlab.attacks.eot.EOT` automatically. Every
defended model keeps its ``undefended`` base, the default source of the ``transfer`` attack, and
describes itself in ``defence`` (read by the report). In a suite::

    models:
      - {name: quantized-input, params: {base: {name: digits-cnn}, levels: 4}}
      - {name: noisy-input, params: {base: {name: digits-cnn}, sigma: 0.3, eot: 16}}

See docs/defences.md.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import models
from robustlab.core.types import Positive, PositiveInt, Seed
from robustlab.defenses.preprocess import Preprocessed, gaussian_noise, quantize, resize_pad
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param


def base_module(spec: dict[str, Any], what: str) -> tuple[TorchClassifier, nn.Module]:
    """The registered model of ``spec`` and its module with the adapter's normalization built in
    (so a pre-processing or a mixture sees raw inputs in the model's domain)."""
    from robustlab.training.api import _Normalized, component

    name, params = component(spec, "models", models)
    clf = models.create(name, params)
    if not isinstance(getattr(clf, "module", None), nn.Module):
        raise CapabilityError(
            f"{what} needs a torch model as {spec!r}, got {type(clf).__name__} (black-box)"
        )
    net = clf.module
    if getattr(clf, "mean", None) is not None or getattr(clf, "std", None) is not None:
        net = _Normalized(net, clf.mean, clf.std)
    return clf, net


def _wrap(
    base: tuple[TorchClassifier, nn.Module], name: str, transform: Any, bpda: bool,
    seed: int | None, defence: dict[str, Any],
) -> TorchClassifier:  # fmt: skip
    clf, net = base
    out = TorchClassifier(
        Preprocessed(net, transform, bpda=bpda, seed=seed), clf.num_classes, clf.domain, name=name
    )
    out.undefended = clf  # type: ignore[attr-defined]
    out.defence = {"name": name, **defence}  # type: ignore[attr-defined]
    return out


@models.register("quantized-input")
def quantized_input(
    base: spec_param("models"),  # type: ignore[valid-type]
    levels: PositiveInt = 4,
    bpda: bool = True,
) -> TorchClassifier:
    """``base`` behind bit-depth reduction to ``levels`` values of its input domain (Xu et al.,
    2018); gradients through BPDA's identity (``bpda``, default) or through the rounding itself
    (zero: a masked defence, flagged by the report)."""
    if levels < 2:
        raise ConfigError(f"quantized-input: levels must be >= 2, got {levels}")
    b = base_module(base, "model 'quantized-input'")
    lo, hi = b[0].domain.lo, b[0].domain.hi
    t = partial(_deterministic, partial(quantize, levels=levels, lo=lo, hi=hi))
    return _wrap(b, "quantized-input", t, bpda, None,
                 {"non_differentiable": True, "bpda": bpda, "levels": levels})  # fmt: skip


def _deterministic(f: Any, x: Any, gen: Any) -> Any:
    return f(x)


def _randomized(out: TorchClassifier, eot: int) -> TorchClassifier:
    out.randomized = True  # type: ignore[attr-defined]
    out.eot = eot  # type: ignore[attr-defined]
    out.defence["randomized"] = True  # type: ignore[attr-defined]
    out.defence["eot"] = eot  # type: ignore[attr-defined]
    return out


@models.register("noisy-input")
def noisy_input(
    base: spec_param("models"),  # type: ignore[valid-type]
    sigma: Positive = 0.25,
    eot: PositiveInt = 16,
    seed: Seed = 0,
) -> TorchClassifier:
    """``base`` on ``x + N(0, sigma^2)``, a fresh draw per query (randomized; ``seed`` starts the
    model's own random stream). White-box attacks average ``eot`` draws (EOT; 1 = none)."""
    t = partial(_noise, sigma)
    b = base_module(base, "model 'noisy-input'")
    return _randomized(_wrap(b, "noisy-input", t, False, seed, {"sigma": sigma}), eot)


def _noise(sigma: float, x: Any, gen: Any) -> Any:
    return gaussian_noise(x, sigma, gen)


@models.register("resize-pad-input")
def resize_pad_input(
    base: spec_param("models"),  # type: ignore[valid-type]
    low: PositiveInt = 6,
    eot: PositiveInt = 16,
    seed: Seed = 0,
) -> TorchClassifier:
    """``base`` on its input resized to a random side in ``low..side`` and padded back to
    ``side`` at a random offset (Xie et al., 2018; randomized, 4-D image inputs). White-box
    attacks average ``eot`` draws (EOT; 1 = none)."""
    b = base_module(base, "model 'resize-pad-input'")
    clf = b[0]
    shape = clf.domain.shape
    if shape is None or len(shape) != 3 or shape[1] is None:
        raise ConfigError(f"resize-pad-input needs images of a known side, got shape {shape}")
    side = int(shape[1])
    if low > side:
        raise ConfigError(f"resize-pad-input: low {low} is larger than the image side {side}")
    t = partial(_resize, low, side, float(clf.domain.lo))
    out = _wrap(b, "resize-pad-input", t, False, seed, {"low": low, "side": side})
    return _randomized(out, eot)


def _resize(low: int, side: int, fill: float, x: Any, gen: Any) -> Any:
    return resize_pad(x, low, side, gen, fill)
