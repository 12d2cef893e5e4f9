"""Early-learning regularization (ELR) for training on noisy labels (S31).

Liu, Niles-Weed, Razavian & Fernandez-Granda, "Early-Learning Regularization Prevents Memorization
of Noisy Labels", NeurIPS 2020 (Sec. 4, "Methodology"). Networks fit the clean labels first
("early learning") and only later memorise the wrong ones; ELR keeps a per-example target ``t_i``,
a temporal ensemble of the model's own past predictions, and penalises moving away from it:

    L_ELR = L_CE + (lambda / n) sum_i log(1 - <p_i, t_i>)
    t_i <- beta t_i + (1 - beta) p_i / sum(p_i)        (updated each time example i is in a batch)

with ``p_i`` the softmax output. The gradient of the log term pushes ``p_i`` towards ``t_i``,
which (estimated during early learning) agrees with the clean label more often than the noisy one.
Implementation as in the authors' code (``ELR/model/loss.py``): targets start at zero, ``p`` is
clamped to ``[1e-4, 1 - 1e-4]`` before the inner product (so the log stays finite), the target
update uses the detached prediction of the current forward pass, and the mean over the batch
stands for ``1/n sum_i``. Their CIFAR-10 settings: ``beta = 0.7``, ``lambda = 3`` (the defaults
here); CIFAR-100: ``0.9``, ``7``.

The targets are per example of the training set (``Position.index``), allocated in ``setup`` and
saved with every checkpoint (``state_dict``), so a resumed training equals an uninterrupted one.

Example::

    import robustlab
    clf = robustlab.train({
        "base": {"name": "small-cnn", "params": {"side": 28}},
        "data": {"name": "noisy-labels", "params": {
            "data": {"name": "fashion-mnist", "params": {"split": "train", "limit": 5000}},
            "kind": "symmetric", "rate": 0.4}},
        "trainer": {"name": "elr", "params": {"lam": 3.0, "beta": 0.7}},
        "epochs": 15,
    })
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import trainers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import NonNegative, Positive, PositiveInt, Rate
from robustlab.training.trainers import Position, Step, _forward

CLAMP = 1e-4  # the authors' clamp of p before <p, t>


def elr_penalty(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``log(1 - <p_i, t_i>)`` with ``p = softmax(logits)`` clamped to
    ``[1e-4, 1 - 1e-4]`` (ELR's regulariser before the ``lambda`` factor)."""
    p = F.softmax(logits, dim=1).clamp(CLAMP, 1 - CLAMP)
    return torch.log(1 - (targets * p).sum(dim=1)).mean()


@trainers.register("elr")
@dataclass(eq=False)
class ELR:
    """Cross-entropy plus ``lam`` x ELR's ``log(1 - <p, t>)``, ``t`` a per-example temporal
    ensemble (momentum ``beta``) of the model's predictions (Liu et al., NeurIPS 2020; see the
    module docstring). For training on noisy labels, e.g. the ``noisy-labels`` dataset."""

    needs_grad = False  # clean inputs only

    lam: NonNegative = 3.0
    beta: Rate = 0.7
    lr: Positive = 1e-3
    batch_size: PositiveInt = 128

    def __post_init__(self) -> None:
        self.targets: torch.Tensor | None = None

    def setup(self, clf: Any, train: Any) -> None:
        """Zero targets ``[len(train), num_classes]`` on the model's device."""
        self.targets = torch.zeros(len(train), clf.num_classes, device=clf.device)

    def step(
        self, clf: Any, x: torch.Tensor, y: torch.Tensor, rng: ExampleRNG, at: Position
    ) -> Step:
        if self.targets is None or at.index is None:
            raise ConfigError(
                "trainer 'elr' keeps per-example targets: it runs inside robustlab's training "
                "loop (setup() first, batch positions in Position.index)"
            )
        logits = _forward(clf, x)
        idx = at.index.to(self.targets.device)
        with torch.no_grad():
            p = F.softmax(logits.detach(), dim=1).clamp(CLAMP, 1 - CLAMP)
            t = self.beta * self.targets[idx] + (1 - self.beta) * p / p.sum(dim=1, keepdim=True)
            self.targets[idx] = t
        loss = F.cross_entropy(logits, y) + self.lam * elr_penalty(logits, t)
        return Step(loss, logits.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"targets": None if self.targets is None else self.targets.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("targets")
        if saved is None:
            return
        if self.targets is not None and saved.shape != self.targets.shape:
            raise ConfigError(
                f"trainer 'elr': checkpoint targets have shape {tuple(saved.shape)}, the training "
                f"set needs {tuple(self.targets.shape)}"
            )
        device = self.targets.device if self.targets is not None else saved.device
        self.targets = saved.to(device).clone()
