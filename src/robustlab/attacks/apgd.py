"""Auto-PGD with CE or DLR loss, untargeted and targeted (Croce & Hein, ICML 2020, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks").

White-box, any Lp ball (Linf and L2 as in the paper; L1 uses the sparse steepest step of
:func:`~robustlab.attacks.steps.steepest_step`, not the adaptive sparsity of APGD-L1). Step size
``2 eps``, momentum 0.75, and at checkpoints ``w_j`` (``p_0=0, p_1=0.22, p_{j+1} = p_j +
max(p_j - p_{j-1} - 0.03, 0.06)``) the step is halved and the iterate restarted from the best point
when fewer than ``rho=75%`` of the steps since the last checkpoint increased the loss, or when the
step was not halved and the best loss did not improve. Every example has its own step size and
checkpoint state and leaves the batch when the goal is met (early stop). Examples that already
meet the goal at the clean input are never iterated (AutoAttack's start-time skip): they are
returned as they are (``x_adv = x``, fooled, one query, the clean forward pass that every example
is charged for).

Example::

    res = APGD(loss="dlr", steps=100)(clf, x, y, ThreatModel("inf", 8 / 255), rng=rng)
    res = APGDT(n_targets=9)(clf, x, y, ThreatModel("2", 0.5), rng=rng)
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.apgd_core import apgd_run, checkpoints, dlr_loss
from robustlab.attacks.base import Goal, Misclassified, check_inputs, require_grad, until_fooled
from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, PositiveInt, ThreatModel

__all__ = ["APGD", "APGDT", "apgd_run", "checkpoints", "dlr_loss"]


def _at_start(
    model: Any, x: torch.Tensor, y: torch.Tensor, goal: Goal
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the clean input and which examples already meet the goal there (the start-time
    skip of AutoAttack's APGD: such an example is adversarial as it is; it is recorded as fooled
    with ``x_adv = x`` and one query, and never iterated)."""
    with torch.no_grad():
        z = model.logits(x)
    return z, goal.success(z, y).to(x.device)


class _APGDBase:
    needs_grad = True  # white-box: validation refuses it on a model without gradients

    name = "apgd"

    def _check(self, model: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.loss not in ("ce", "dlr"):
            raise ConfigError(f"{self.name}: loss must be 'ce' or 'dlr', got {self.loss!r}")
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(f"{self.name} needs steps >= 1 and restarts >= 1")
        require_grad(model, self.name)
        check_inputs(model, x, y, self.name)
        if self.loss == "dlr" and model.num_classes < 4:
            raise ConfigError(f"{self.name}: the DLR loss needs >= 4 classes")


@attacks.register("apgd")
class APGD(_APGDBase):
    """APGD-CE / APGD-DLR: ``loss`` in ``ce|dlr``, ``steps`` iterations, ``restarts`` random starts
    for the examples not yet fooled (each restart draws a new random start)."""

    def __init__(
        self,
        loss: str = "ce",
        steps: PositiveInt = 100,
        restarts: PositiveInt = 1,
        early_stop: bool = True,
    ) -> None:
        self.loss = loss
        self.steps = steps
        self.restarts = restarts
        self.early_stop = early_stop

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        rng: ExampleRNG,
    ) -> AttackResult:
        self._check(model, x, y)
        goal = goal or Misclassified()
        x, y = x.detach(), y.to(x.device)
        _, fooled = _at_start(model, x, y, goal)
        return until_fooled(
            x,
            range(self.restarts),
            lambda todo, _: apgd_run(model, x[todo], y[todo], None, threat, goal, self.loss,
                                     self.steps, rng.take(todo), self.early_stop),
            success=fooled,
            queries=torch.ones(x.shape[0], dtype=torch.long, device=x.device),  # the pass at x
        )  # fmt: skip


@attacks.register("apgd_t")
class APGDT(_APGDBase):
    """Targeted APGD (AutoAttack's APGD-T): for each of the ``n_targets`` highest-scoring wrong
    classes in turn, a targeted run (targeted DLR or CE loss) on the examples still not fooled; the
    goal stays untargeted (success = misclassified)."""

    name = "apgd_t"

    def __init__(
        self,
        loss: str = "dlr",
        steps: PositiveInt = 100,
        n_targets: PositiveInt = 9,
        early_stop: bool = True,
    ) -> None:
        self.loss = loss
        self.steps = steps
        self.n_targets = n_targets
        self.early_stop = early_stop
        self.restarts = 1

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        rng: ExampleRNG,
    ) -> AttackResult:
        self._check(model, x, y)
        if self.n_targets < 1:
            raise ConfigError(f"apgd_t needs n_targets >= 1, got {self.n_targets}")
        if goal is not None and not isinstance(goal, Misclassified):
            raise ConfigError("apgd_t is untargeted (it picks its own targets); use apgd instead")
        goal = goal or Misclassified()
        x, y = x.detach(), y.to(x.device)
        z, fooled = _at_start(model, x, y, goal)
        order = z.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
        return until_fooled(
            x,
            range(min(self.n_targets, model.num_classes - 1)),
            lambda todo, k: apgd_run(model, x[todo], y[todo], order[todo, k], threat, goal,
                                     self.loss, self.steps, rng.take(todo), self.early_stop),
            success=fooled,
            queries=torch.ones(x.shape[0], dtype=torch.long, device=x.device),  # the logits above
        )  # fmt: skip
