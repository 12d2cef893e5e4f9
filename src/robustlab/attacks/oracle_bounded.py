"""Oracle-bounded perturbations (S4: Zhang et al., 2023, "Foundation Model-oriented Robustness:
Robust Image Model Evaluation with Pretrained Models").

An adversarial example only counts when it is still an example of its class: a *surrogate
oracle* (another registered model -- a stronger or an ensemble model, ideally a foundation model)
must keep labelling it as the true class. The wrapped ``attack`` ({name, params}, any registered
Lp attack; default PGD-20) searches inside the threat model; then, per example:

* ``mode: backoff`` (default; "the search stops when the oracle's label changes"): if the oracle
  no longer gives the true label at the candidate ``x + delta``, the perturbation is scaled back
  to the largest ``s * delta`` (``s`` in [0, 1], found by ``backoff_steps`` bisection steps on
  the oracle only) at which the oracle still gives it, and the model is judged there;
* ``mode: reject``: such a candidate is rejected (the clean input is reported).

``success`` = the model is fooled **and** the oracle keeps the true label at the reported input;
an example the oracle gets wrong even clean cannot succeed (its input stays clean). Recorded
extras (``record_extra``): ``oracle_kept`` (oracle label == true label at the reported input),
``oracle_clean`` (oracle right on the clean input), ``oracle_pred``, ``scale`` (``s``; 1 = the
inner attack's candidate unchanged). :func:`robustlab.metrics.vision.oracle_agreement` reads
``oracle_pred`` to give the model's agreement with the oracle on these inputs.

Threat model: the inner attack's Lp ball (a scaled-back perturbation stays in it). The oracle is
queried ``1 + 1 + backoff_steps`` times per example at most (``queries`` counts the model's only).

Example (suite probe)::

    - {kind: attack, name: oracle-bounded, levels: [0.1, 0.2],
       params: {oracle: {name: digits-cnn}, attack: {name: pgd, params: {steps: 20}}}}
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs, spec_model
from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.registry import attacks, check_params
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, NonNegativeInt, ThreatModel
from robustlab.models.trained import spec_param

DEFAULT_ATTACK = {"name": "pgd", "params": {"steps": 20}}


def oracle_labels(oracle: Any, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """The oracle's top-1 labels of ``x`` (no gradients), on the CPU."""
    with torch.no_grad():
        return torch.cat([oracle.logits(x[i : i + chunk]).argmax(1).cpu()
                          for i in range(0, len(x), chunk)])  # fmt: skip


@attacks.register("oracle-bounded")
class OracleBounded:
    """Run ``attack`` on the model, keep only perturbations the ``oracle`` still labels as the
    true class (scaled back, or rejected); success needs both (S4)."""

    record_extra = ("oracle_kept", "oracle_clean", "oracle_pred", "scale")

    def __init__(
        self,
        oracle: spec_param("models"),  # type: ignore[valid-type]
        attack: dict[str, Any] | None = None,
        mode: Literal["backoff", "reject"] = "backoff",
        backoff_steps: NonNegativeInt = 10,
    ) -> None:
        spec = DEFAULT_ATTACK if attack is None else attack
        if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "params"}:
            raise ConfigError(
                f"oracle-bounded: attack must be {{name: ..., params: {{...}}}}, got {spec!r}"
            )
        name, params = spec["name"], dict(spec.get("params") or {})
        if name == "oracle-bounded":
            raise ConfigError("oracle-bounded: the inner attack cannot itself be oracle-bounded")
        params = check_params(attacks.get(name), params, f"attack {name!r}")
        inner = attacks.create(name, params)
        if getattr(inner, "threat", "lp") != "lp":
            raise ConfigError(f"oracle-bounded: inner attack {name!r} is not an Lp-ball attack")
        self.oracle = oracle
        self.attack = {"name": name, "params": params}
        self.mode = mode
        self.backoff_steps = backoff_steps
        self._inner = inner
        self.needs_grad = bool(getattr(inner, "needs_grad", False))

    def _oracle(self) -> Any:
        return spec_model(self, self.oracle)

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
        check_inputs(model, x, y, "oracle-bounded")
        oracle = self._oracle()
        od, md = oracle.domain, model.domain
        if (od.lo, od.hi) != (md.lo, md.hi) or (od.shape and md.shape and od.shape != md.shape):
            raise DomainError(
                f"oracle-bounded: oracle domain [{od.lo}, {od.hi}] {od.shape} differs from the "
                f"model's [{md.lo}, {md.hi}] {md.shape}"
            )
        goal = goal or Misclassified()
        x, ycpu = x.detach(), y.cpu()
        res = self._inner(model, x, y, threat, goal=goal, rng=rng)
        cand = res.x_adv.detach().to(x.device)
        n = len(x)
        clean_ok = oracle_labels(oracle, x) == ycpu
        o_pred = oracle_labels(oracle, cand)
        kept = (o_pred == ycpu) & clean_ok
        scale = torch.where(kept, 1.0, 0.0).double()
        shape = (-1,) + (1,) * (x.dim() - 1)
        delta = cand - x
        back = torch.nonzero(~kept & clean_ok).flatten()
        if self.mode == "backoff" and back.numel():
            a = torch.zeros(len(back), dtype=torch.float64)  # oracle keeps the label at a
            b = torch.ones(len(back), dtype=torch.float64)  # ... and changes it at b
            xb, db, yb = x[back], delta[back], ycpu[back]
            for _ in range(self.backoff_steps):
                mid = (a + b) / 2
                ok = oracle_labels(oracle, xb + mid.to(x.dtype).to(x.device).view(shape) * db) == yb
                a = torch.where(ok, mid, a)
                b = torch.where(ok, b, mid)
            scale[back] = a
        s = scale.to(x.dtype).to(x.device).view(shape)
        x_out = (x + s * delta).clamp(md.lo, md.hi)  # between x and cand: in the ball
        x_out = torch.where(kept.to(x.device).view(shape), cand, x_out)
        o_out = oracle_labels(oracle, x_out)
        with torch.no_grad():
            fooled = goal.success(model.logits(x_out), y.to(x.device)).cpu()
        kept_out = (o_out == ycpu) & clean_ok
        queries = res.queries.cpu() + 1
        extra = {"oracle_kept": kept_out, "oracle_clean": clean_ok, "oracle_pred": o_out,
                 "scale": scale}  # fmt: skip
        assert len(fooled) == n
        return AttackResult(x_out, fooled & kept_out, queries, extra)
