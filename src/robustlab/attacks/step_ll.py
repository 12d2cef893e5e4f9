"""Step-l.l.: one gradient step towards the least-likely class (Kurakin et al., 2017; S34).

Threat model: any Lp ball (white-box). The step *descends* the cross-entropy of the class the model
finds least likely on the clean input: ``x - eps * sign(grad CE(f(x), y_ll))`` for Linf (the
normalised gradient for L2, the sparse step for L1), projected onto the ball and the input domain.
Success is judged by the goal (default: misclassified).

Example::

    res = StepLL()(clf, x, y, ThreatModel("inf", 8 / 255), rng=ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks.base import Goal, Misclassified, check_inputs, final_success, require_grad
from robustlab.attacks.steps import steepest_step
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel


@attacks.register("step_ll")
class StepLL:
    """One step of size eps towards the least-likely class; 2 forward passes, 1 backward."""

    needs_grad = True  # white-box: validation refuses it on a model without gradients
    single_step = True  # the report's gradient-masking checks compare it with iterative attacks

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
        require_grad(model, "step_ll")
        check_inputs(model, x, y, "step_ll")
        goal = goal or Misclassified()
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.logits(xg)
            ll = logits.detach().argmin(dim=1)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, ll, reduction="sum"), xg)
        step = steepest_step(-grad, x, threat.norm, threat.eps, model.domain)
        x_adv = threat.project(x.detach() + step, x.detach(), model.domain)
        success = final_success(model, goal, x_adv, y.to(x.device))  # deferred, like FGSM's
        return AttackResult(x_adv, success, torch.full((x.shape[0],), 2, dtype=torch.long))
