"""AutoAttack-style ensemble: run attacks in sequence, each only on the examples still robust,
and keep the per-example worst case (Croce & Hein, ICML 2020; S17/S36 attack side).

Threat model: whatever the member attacks support (Linf and L2 for the default list: APGD-CE,
APGD-T with the targeted DLR loss, Square); the result lies in the ball because every member's does.
An example counts as robust only if every member failed; queries add up over members.

Example::

    res = AutoAttack()(clf, x, y, ThreatModel("inf", 8 / 255), rng=ExampleRNG.from_seed(0, ids))
    res = AutoAttack(attacks=[{"name": "pgd", "steps": 50, "restarts": 5}, "apgd_t"])(...)
    res = AutoAttack(fab=True)(...)   # APGD-CE, APGD-T, FAB^T (minimum norm), Square
"""

from __future__ import annotations

from typing import Any

import torch

from robustlab.attacks.base import Goal, Misclassified, check_inputs, until_fooled
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import attacks
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel

STANDARD: tuple[Any, ...] = (
    {"name": "apgd", "loss": "ce", "steps": 100},
    {"name": "apgd_t", "loss": "dlr", "steps": 100, "n_targets": 9},
    {"name": "square", "n_queries": 5000},
)
# AutoAttack's FAB-T: later targets only for examples still robust at eps
FAB_T: dict[str, Any] = {"name": "fab", "n_targets": 9, "steps": 100, "minimize": False}


@attacks.register("autoattack")
class AutoAttack:
    """Ensemble of ``attacks`` (names or ``{"name": ..., **params}``; default APGD-CE, APGD-T,
    Square). ``skip_unavailable``: members needing gradients are skipped on black-box adapters
    (so the ensemble degrades to its black-box members) instead of raising. ``fab``: add the
    FAB-like minimum-norm member (``True``: FAB^T, 9 targets, 100 steps, as in AutoAttack; or a
    dict of ``fab`` parameters) before Square (or last)."""

    def __init__(
        self,
        attacks: list[Any] | None = None,
        skip_unavailable: bool = True,
        fab: bool | dict[str, Any] = False,
    ) -> None:
        self.attacks = attacks
        self.skip_unavailable = skip_unavailable
        self.fab = fab

    def members(self) -> list[tuple[str, Any]]:
        specs = list(self.attacks if self.attacks is not None else STANDARD)
        if self.fab:
            extra = self.fab if isinstance(self.fab, dict) else {}
            fab = {**FAB_T, **{k: v for k, v in extra.items() if k != "name"}}
            names = [sp.get("name") if isinstance(sp, dict) else sp for sp in specs]
            specs.insert(names.index("square") if "square" in names else len(specs), fab)
        out = []
        for spec in specs:
            if isinstance(spec, str):
                spec = {"name": spec}
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(
                    f"autoattack: member {spec!r} must be a name or a dict with 'name'"
                )
            params = {k: v for k, v in spec.items() if k != "name"}
            if spec["name"] == "autoattack":
                raise ConfigError("autoattack cannot contain itself")
            out.append((spec["name"], attacks.create(spec["name"], params)))
        if not out:
            raise ConfigError("autoattack needs at least one member attack")
        return out

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
        check_inputs(model, x, y, "autoattack")
        goal = goal or Misclassified()
        x, y = x.detach(), y.to(x.device)
        n = x.shape[0]
        with torch.no_grad():
            success = goal.success(model.logits(x), y).to(x.device)  # already wrong: nothing to do
        by = torch.full((n,), -1, dtype=torch.long, device=x.device)

        def run(todo: torch.Tensor, member: tuple[int, tuple[str, Any]]) -> Any:
            k, (name, atk) = member
            try:
                res = atk(model, x[todo], y[todo], threat, goal=goal, rng=rng.take(todo).fork(name))
            except CapabilityError:
                if not self.skip_unavailable:
                    raise
                return None
            ok = res.success.to(x.device)
            by[todo[ok]] = k
            # a failed member leaves the clean input as the candidate (not its last iterate)
            keep = torch.where(ok.view(-1, *([1] * (x.dim() - 1))), res.x_adv, x[todo])
            return keep, ok, res.queries

        result = until_fooled(
            x,
            enumerate(self.members()),
            run,
            success=success,
            queries=torch.ones(n, dtype=torch.long, device=x.device),
        )
        result.extra["member"] = by.cpu()
        return result
