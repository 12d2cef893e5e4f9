"""Trainer ``mixer``: the mixing network of adaptive smoothing (S17; Bai et al., 2024), trained on
clean and adversarial examples with both base models frozen.

Per batch: adversarial examples by robustlab's PGD through the *whole* current mixture (the mixing
network included; no second PGD), then on the clean and the adversarial batch the mixture's
cross-entropy plus ``detector`` times the binary cross-entropy of ``alpha(x)`` against "is
adversarial" (0 on clean, 1 on adversarial inputs): the paper adapts an adversarial-input
detector into the mixing network, so it learns to lean on the robust model where the input is
attacked and on the accurate one elsewhere. Only the mixing network's parameters are trained
(``trainable``); the base for ``trained`` must be ``mixed`` with ``mixer: learned``.

Example::

    robustlab.train({
        "base": {"name": "mixed", "params": {"standard": STD, "robust": ROB, "mixer": "learned"}},
        "data": {"name": "digits", "params": {"split": "train"}},
        "trainer": {"name": "mixer", "params": {"eps": 0.2}},
        "epochs": 5,
    })
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import NonNegative, Norm, Positive, PositiveInt, ThreatModel
from robustlab.training.trainers import Position, Step, _attack


def _mixture(clf: Any) -> Any:
    from robustlab.models.mixed import MixedModule

    module = getattr(clf, "module", None)
    if not isinstance(module, MixedModule) or module.mixer is None:
        raise ConfigError(
            "trainer 'mixer' trains the mixing network of a 'mixed' model with mixer: learned; "
            f"got base {getattr(clf, 'name', type(clf).__name__)!r}"
        )
    return module


@trainers.register("mixer")
@dataclass(eq=False)
class Mixer:
    """Adaptive smoothing's mixing network (S17): mixture cross-entropy on clean and PGD examples
    (``steps`` of robustlab's PGD at ``eps`` in ``norm``, through the whole mixture) plus
    ``detector`` x BCE(alpha(x), adversarial?). Trains only the mixer."""

    needs_grad = True  # the inner maximisation needs input gradients

    eps: Positive = 0.1
    steps: PositiveInt = 7
    step_size: Positive | None = None
    norm: Norm = "inf"
    detector: NonNegative = 1.0
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def setup(self, clf: Any, train: Any) -> None:
        _mixture(clf)

    def trainable(self, clf: Any) -> Iterable[torch.nn.Parameter]:
        return _mixture(clf).mixer.parameters()

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        module = _mixture(clf)
        attack = PGD(steps=self.steps, step_size=self.step_size, early_stop=False)
        x_adv = _attack(clf, attack, x, y, ThreatModel(self.norm, self.eps), rng)
        module.train()
        logp, alpha = module.mix(
            torch.cat([x, x_adv]).to(clf.device)
        )  # = clf.logits (mixed has no normalization)
        n = len(x)
        loss = F.nll_loss(logp, y.repeat(2))
        if self.detector > 0:
            target = torch.cat([torch.zeros(n, 1), torch.ones(n, 1)]).to(alpha)
            loss = loss + self.detector * F.binary_cross_entropy(
                alpha.clamp(1e-6, 1 - 1e-6), target
            )
        return Step(loss, logp[n:].detach())
