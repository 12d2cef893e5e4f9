"""Fast Gradient (Sign) Method: one gradient step of size eps (Goodfellow et al., 2015; S34)."""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.base import (
    Goal,
    Misclassified,
    check_inputs,
    final_success,
    logits_and_grad,
    require_grad,
)
from robustlab.attacks.steps import steepest_step
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel


@attacks.register("fgsm")
class FGSM:
    """Single-step attack: ``x + eps * sign(grad)`` for Linf, the normalised gradient for L2/L1.

    White-box (needs gradients). Threat model: any Lp ball; the result is projected onto the ball
    and the input domain. Cost: one forward/backward, plus one forward to check success, deferred
    until ``success`` is read (the runner takes it from its own evaluation of ``x_adv``).
    """

    needs_grad = True  # white-box: validation refuses it on a model without gradients
    single_step = True  # the report's gradient-masking checks compare it with iterative attacks

    def cost(self, n: int) -> dict[str, int]:
        """Model passes on ``n`` examples (``robustlab plan --estimate``): one forward/backward;
        the success check is the task's evaluation of ``x_adv``, counted by the runner."""
        return {"forward": n, "backward": n}

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
        _, grad = logits_and_grad(model, x, y, goal)
        dom = model.domain
        if threat.norm == "inf":  # x + eps sign(g) is on the ball already: only the domain clips
            x_adv = x.detach().add(grad.sign_(), alpha=threat.eps).clamp_(dom.lo, dom.hi)
        else:
            step = steepest_step(grad, x, threat.norm, threat.eps, dom)
            x_adv = threat.project(x + step, x, dom).detach()
        queries = torch.full((x.shape[0],), 2, dtype=torch.long)
        return AttackResult(x_adv, final_success(model, goal, x_adv, y), queries)
