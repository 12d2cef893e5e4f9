"""Transfer attack: adversarial examples crafted on a ``source`` model, evaluated on the target
(Papernot et al., 2016; Carlini et al., 2019, "On Evaluating Adversarial Robustness", the fifth
gradient-masking check).

The target is only queried once per example (the final check); its gradients are never used. A
defence that masks its gradients can leave *lower* accuracy under a transfer attack from an
undefended model than under white-box attacks on itself -- the report's gradient-masking section
flags exactly that.

Example (a suite probe; ``source`` defaults to the target's ``undefended`` base, which every
defended model of :mod:`robustlab.models.defended` and ``mixed`` declare)::

    - {kind: attack, name: transfer, params: {source: {name: digits-cnn, params: {seed: 1}},
                                               attack: {name: pgd, params: {steps: 20}}},
       levels: [0.1, 0.2]}
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs, final_success, spec_model
from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.registry import attacks, check_params
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel
from robustlab.models.trained import spec_param

DEFAULT_ATTACK = {"name": "pgd", "params": {"steps": 20}}


@attacks.register("transfer")
class Transfer:
    """Craft with ``attack`` ({name, params}, any registered attack; default PGD-20) on
    ``source`` ({name, params}, a registered model; default the target's ``undefended`` base)
    inside the same threat model, then evaluate the adversarial examples on the target.

    Traits: ``needs_grad = False`` (the target's gradients are not used: it runs on black-box
    targets too) and ``transfer = True`` (the report compares it with white-box attacks).
    Source and target must share the input domain; the source's random streams are the probe's.
    """

    needs_grad = False  # the target's gradients are never used
    transfer = True  # the gradient-masking checks compare it with the white-box attacks

    def __init__(
        self,
        source: spec_param("models") | None = None,  # type: ignore[valid-type]
        attack: dict[str, Any] | None = None,
    ) -> None:
        spec = DEFAULT_ATTACK if attack is None else attack
        if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "params"}:
            raise ConfigError(
                f"transfer: attack must be {{name: ..., params: {{...}}}}, got {spec!r}"
            )
        name, params = spec["name"], dict(spec.get("params") or {})
        if name == "transfer":
            raise ConfigError("transfer: the source attack cannot itself be a transfer attack")
        params = check_params(attacks.get(name), params, f"attack {name!r}")
        self.source = source
        self.attack = {"name": name, "params": params}
        self._inner = attacks.create(name, params)

    def _source(self, target: Any) -> Any:
        if self.source is None:
            src = getattr(target, "undefended", None)
            if src is None:
                raise ConfigError(
                    f"transfer: target {getattr(target, 'name', type(target).__name__)!r} "
                    "declares no undefended base; give the attack a source model spec"
                )
            return src
        return spec_model(self, self.source)

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
        from robustlab.attacks.eot import for_attack

        check_inputs(model, x, y, "transfer")
        src = self._source(model)
        sd, td = src.domain, model.domain
        if (sd.lo, sd.hi) != (td.lo, td.hi) or (sd.shape and td.shape and sd.shape != td.shape):
            raise DomainError(
                f"transfer: source domain [{sd.lo}, {sd.hi}] {sd.shape} differs from the "
                f"target's [{td.lo}, {td.hi}] {td.shape}"
            )
        goal = goal or Misclassified()
        res = self._inner(for_attack(src, self._inner), x, y, threat, goal=goal, rng=rng)
        x_adv = res.x_adv.detach()
        queries = torch.ones(x.shape[0], dtype=torch.long)
        return AttackResult(x_adv, final_success(model, goal, x_adv, y.to(x.device)), queries)
