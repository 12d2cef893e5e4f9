"""Certifier protocol and the checks shared by certifiers.

A certifier proves, per example, that a classifier's prediction cannot change within an Lp ball::

    cert = certifier.certify(model, x, y, rng=rng)   # -> Certificate(pred, radius, norm, abstained)

* ``pred`` (int64 ``[B]``) is the prediction the certificate is about -- the certifier's *own*
  prediction procedure (for randomized smoothing: the smoothed classifier), ``-1`` where it abstains;
* ``radius`` (float ``[B]``) is the certified radius in ``norm`` (``0`` where nothing is certified);
* ``abstained`` (bool ``[B]``) flags examples without a prediction.

Certifiers are batched torch code, are constructed like scikit-learn estimators (``__init__`` only
stores keyword hyperparameters; :meth:`validate` checks them when the certifier runs), draw all their
randomness from the per-example :class:`~robustlab.core.rng.ExampleRNG` (so results do not depend on
batch size or order), and never look at the labels ``y`` except to check shapes. Probabilistic
certifiers expose their failure probability as an ``alpha`` attribute and, where the prediction
procedure differs from the base model's argmax, a ``predict(model, x, *, rng)`` method; the contract
checks in :mod:`robustlab.testing` use both.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Certificate


@runtime_checkable
class Certifier(Protocol):
    """Anything with a batched ``certify(model, x, y, *, rng) -> Certificate``."""

    def certify(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, *, rng: ExampleRNG
    ) -> Certificate: ...


def check_certify_inputs(model: Any, x: torch.Tensor, y: torch.Tensor | None, name: str) -> None:
    """Raise if ``x`` does not fit the model's domain or ``y`` has a different batch size."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise DomainError(f"{name} needs a batch of input tensors, got {type(x).__name__}")
    if y is not None and len(y) != x.shape[0]:
        raise DomainError(f"{name}: {x.shape[0]} inputs but {len(y)} labels")
    model.domain.check(x, f"{name} input")


def require_positive(name: str, **values: float) -> None:
    """Raise :class:`ConfigError` naming the first of ``values`` that is not a finite number > 0."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v == float("inf"):
            raise ConfigError(f"{name}: {key} must be a finite number > 0, got {v!r}")


def require_int(name: str, minimum: int, **values: int) -> None:
    """Raise :class:`ConfigError` naming the first of ``values`` that is not an int >= ``minimum``."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{name}: {key} must be an integer >= {minimum}, got {v!r}")


def require_probability(name: str, **values: float) -> None:
    """Raise :class:`ConfigError` naming the first of ``values`` not strictly inside (0, 1)."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ConfigError(f"{name}: {key} must lie strictly between 0 and 1, got {v!r}")
