"""Fast Gradient (Sign) Method: one gradient step of size eps (Goodfellow et al., 2015; S34)."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs, loss_and_grad, require_grad
from robustlab.attacks.steps import steepest_step
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel


@attacks.register("fgsm")
class FGSM:
    """Single-step attack: ``x + eps * sign(grad)`` for Linf, the normalised gradient for L2/L1.

    White-box (needs gradients). Threat model: any Lp ball; the result is projected onto the ball
    and the input domain. Cost: one forward/backward, plus one forward to check success.
    """

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
        require_grad(model, "fgsm")
        check_inputs(model, x, y, "fgsm")
        goal = goal or Misclassified()
        _, _, grad = loss_and_grad(model, x, y, goal)
        x_adv = threat.project(
            x + steepest_step(grad, x, threat.norm, threat.eps, model.domain), x, model.domain
        )
        with torch.no_grad():
            success = goal.success(model.logits(x_adv), y).cpu()
        queries = torch.full((x.shape[0],), 2, dtype=torch.long)
        return AttackResult(x_adv.detach(), success, queries)
