"""Expectation over Transformation (EOT; Athalye, Engstrom, Ilyas & Kwok, 2018; Athalye et al.,
2018) for randomized models, shared by every gradient attack.

A randomized defence (random noise, random resize-and-pad) answers each query with a fresh draw;
one draw's input gradient is a noisy estimate of the direction that fools it on most draws, so a
plain gradient attack understates what an attacker can do. :class:`EOT` is a view of the model
whose output is the log of the mean predicted probability over ``samples`` draws, computed in one
batched forward pass (the batch repeated ``samples`` times; no Python loop per draw). Every
gradient attack (PGD, APGD, FGSM, ...) differentiates the view, i.e. attacks the expected
prediction.

:func:`for_attack` is what the runner hands an attack: the EOT view for a white-box attack
(``needs_grad``) on a model declaring ``randomized = True`` with ``eot > 1`` draws, else the
model itself. The report's gradient-masking section lists randomized models and their ``eot``.

Example::

    view = EOT(noisy_model, samples=16)
    PGD(steps=10)(view, x, y, ThreatModel("inf", 0.1), rng=rng)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustlab.core.errors import ConfigError


class EOT:
    """``log mean_k softmax(model.logits(x))`` over ``samples`` independent draws of a randomized
    model, batched: a classifier adapter (same ``domain``, ``capabilities``, ``num_classes``)
    that attacks differentiate in place of the model. With ``samples = 1`` it is the model's
    log-softmax (the same cross-entropy, the same gradients)."""

    def __init__(self, model: Any, samples: int) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"EOT needs samples >= 1, got {samples!r}")
        self.model = model
        self.samples = samples
        self.domain = model.domain
        self.capabilities = model.capabilities
        self.num_classes = model.num_classes
        self.name = f"{getattr(model, 'name', type(model).__name__)}+eot{samples}"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        n, b = self.samples, x.shape[0]
        if n == 1:
            return self.model.logits(x).log_softmax(dim=-1)
        out = self.model.logits(x.repeat(n, *([1] * (x.dim() - 1))))  # draw k: rows kB..kB+B-1
        return out.log_softmax(dim=-1).view(n, b, -1).logsumexp(dim=0) - math.log(n)

    def fingerprint(self) -> str:
        return str(self.model.fingerprint())

    def __getattr__(self, name: str) -> Any:  # module, device, ...: the model's
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)


def for_attack(model: Any, attack: Any) -> Any:
    """The model an attack should see: :class:`EOT` over ``model.eot`` draws when the attack is
    white-box and the model declares ``randomized = True`` with ``eot > 1``; else ``model``."""
    if not getattr(attack, "needs_grad", False) or not getattr(model, "randomized", False):
        return model
    samples = int(getattr(model, "eot", 1))
    return EOT(model, samples) if samples > 1 else model
