"""Trainer ``denoiser``: denoised smoothing (Salman et al., NeurIPS 2020, arXiv:2003.01908).

Trains *only* a Gaussian denoiser ``D`` placed in front of a frozen classifier ``f``, so that the
composite ``f o D`` works as a base model for randomized smoothing: an off-the-shelf (clean)
classifier gets certified robustness without being retrained. The base model must be a
``denoised`` model (:func:`robustlab.models.smoothing_zoo.denoised`: ``{name: denoised, params:
{classifier: {name: ..., params: ...}, width: 32}}``), whose module has a ``denoiser`` and a
``classifier`` part. The loop's ``trainable(clf)`` hook hands the optimizer the denoiser's
parameters only (the classifier's stay bit-identical); the classifier runs in eval mode (its
BatchNorm keeps its running statistics).

Objectives (:func:`robustlab.defenses.denoiser.denoiser_loss`), on ``x + N(0, sigma^2)``
(unclipped, per-example noise streams): ``mse`` -- ||D(x + e) - x||^2; ``stability`` -- the
cross-entropy of ``f(D(x + e))`` against ``f``'s own prediction on ``x`` (Salman et al.'s
"Stab" objective, which needs gradients through ``f`` but no labels).

Example (``digits-cnn-denoised`` is this spec)::

    clf = robustlab.train({
        "base": {"name": "denoised", "params": {"classifier": {"name": "digits-cnn"}}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "denoiser", "params": {"sigma": 0.25, "lr": 3e-3}},
        "epochs": 30, "holdout": 0,
    })
    GaussianSmoothing(sigma=0.25).certify(clf, x, y, rng=rng)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Positive, PositiveInt
from robustlab.defenses.denoiser import Denoised, denoiser_loss
from robustlab.training.trainers import Position, Step, train_mode


def _denoised(clf: Any) -> Denoised:
    net = getattr(clf, "module", None)
    if not isinstance(net, Denoised):
        raise ConfigError(
            "trainer 'denoiser' trains the denoiser in front of a frozen classifier: the base must "
            "be a 'denoised' model ({name: denoised, params: {classifier: {name: ...}}}), got "
            f"base module {type(net).__name__}"
        )
    return net


@trainers.register("denoiser")
@dataclass(eq=False)
class DenoiserTrainer:
    """Denoised smoothing (Salman et al., 2020): train only the denoiser of a ``denoised`` base
    for Gaussian noise of ``sigma``, with the ``mse`` or ``stability`` objective; the classifier
    stays frozen (eval mode)."""

    needs_grad = False  # no input gradients of the model are needed

    sigma: Positive = 0.25
    objective: Literal["mse", "stability"] = "mse"
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def setup(self, clf: Any, train: Any) -> None:
        _denoised(clf)  # refuse another base before the first batch
        if clf.mean is not None or clf.std is not None:
            raise ConfigError("trainer 'denoiser': the denoised base must normalize inside its "
                              "module (the 'denoised' model does), not in the adapter")  # fmt: skip

    def trainable(self, clf: Any) -> Iterable[torch.nn.Parameter]:
        return _denoised(clf).denoiser.parameters()

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        net = _denoised(clf)
        train_mode(net)  # the frozen classifier in eval mode: BatchNorm on running statistics
        noisy = x + self.sigma * rng.normal(*x.shape[1:], device=x.device)
        loss, logits = denoiser_loss(net, x, noisy, self.objective)
        return Step(loss, logits)
