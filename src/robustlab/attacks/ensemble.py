"""AutoAttack-style ensemble: run attacks in sequence, each only on the examples still robust,
and keep the per-example worst case (Croce & Hein, ICML 2020; S17/S36 attack side).

Threat model: whatever the member attacks support (Linf and L2 for the default list: APGD-CE,
APGD-T with the targeted DLR loss, Square); the result lies in the ball because every member's does.
An example counts as robust only if every member failed; queries add up over members.

Versions (the member lists; ``attacks`` replaces them):

- ``"standard"`` (default): the paper's budget -- APGD-CE 100 steps, APGD-T 9 targets x 100 steps
  (targeted DLR loss), Square 5,000 queries.
- ``"fast"``: APGD-CE 50 steps, APGD-T 9 targets x 30 steps, Square 5,000 queries (the black-box
  member keeps the paper's budget: it guards against gradient masking). Measured 2026-12-07 with
  benchmarks/attack_defaults_strength.py on 7 small models none of the presets was tuned on
  (digits and Fashion-MNIST CNNs and MLPs, 2 Linf budgets each, 200 test images): per example,
  no image that torchattacks 3.5.1's ``AutoAttack(version="standard")`` (APGD-CE, APGD-T 9
  targets, FAB-T, 10 steps each; Square 5,000) broke stayed robust, on all 14 setups. The earlier
  3-target APGD-T left 1 such image on 2 of them (only a 4th-9th target finds it); with the same
  streams, the first three target runs are unchanged, so the 9-target preset breaks every image
  the 3-target one did. On 10 held-out setups (8 digits CNNs at Linf 0.1, a Fashion CNN at 2
  eps), checked after the choice, it was never weaker either. CPU time 0.49-0.99x torchattacks'
  on the 19 setups timed (Square is most of both runs; measured before Square's refusal memo):
  about the same cost, not a promise of being faster (docs/vision-attacks.md, "Attack defaults
  by measured strength").

Cost (issue 22, 2026-12-07, benchmarks/ensemble_vs_autoattack.py, 1 thread, CPU time, loaded
machine): ``standard`` vs torchattacks 3.5.1's ``AutoAttack(version="standard")`` (10 APGD steps
per member, FAB-T, Square 5,000) 0.54-0.62x on ``digits-cnn`` (Linf 0.05/0.1) but 1.15-1.31x on a
Fashion-MNIST CNN (0.05, 8/255), never weaker per example on the four: its 10x APGD budget (100
steps, 9 APGD-T targets) is paid back only where Square's refusal memo saves most (small images).
``fast`` measured 0.30-0.34x (digits) and 0.88-0.95x (Fashion) there, as strong as ``standard``.

Example::

    res = AutoAttack()(clf, x, y, ThreatModel("inf", 8 / 255), rng=ExampleRNG.from_seed(0, ids))
    res = AutoAttack(attacks=[{"name": "pgd", "steps": 50, "restarts": 5}, "apgd_t"])(...)
    res = AutoAttack(fab=True)(...)   # APGD-CE, APGD-T, FAB^T (minimum norm), Square
    res = AutoAttack(version="fast")(...)   # YAML: {name: autoattack, params: {version: fast}}
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

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
FAST: tuple[Any, ...] = (
    {"name": "apgd", "loss": "ce", "steps": 50},
    {"name": "apgd_t", "loss": "dlr", "steps": 30, "n_targets": 9},
    {"name": "square", "n_queries": 5000},
)
VERSIONS: dict[str, tuple[Any, ...]] = {"standard": STANDARD, "fast": FAST}
# AutoAttack's FAB-T: later targets only for examples still robust at eps
FAB_T: dict[str, Any] = {"name": "fab", "n_targets": 9, "steps": 100, "minimize": False}


@attacks.register("autoattack")
class AutoAttack:
    """Ensemble of ``attacks`` (names or ``{"name": ..., **params}``; default: the members of
    ``version``). ``version``: ``"standard"`` (the paper's budget: APGD-CE 100 steps, APGD-T 9
    targets x 100 steps, Square 5,000 queries) or ``"fast"`` (APGD-CE 50 steps, APGD-T 9 targets
    x 30 steps, Square 5,000 queries; per example never weaker than torchattacks' AutoAttack on
    the 24 setups measured, module docstring). ``skip_unavailable``: members needing gradients are skipped on black-box
    adapters (so the ensemble degrades to its black-box members) instead of raising. ``fab``: add
    the FAB-like minimum-norm member (``True``: FAB^T, 9 targets, 100 steps, as in AutoAttack; or
    a dict of ``fab`` parameters) before Square (or last).

    Records (``record_extra``): ``member``, the index in :meth:`members` of the member attack that
    broke the example, -1 where none did (robust, or misclassified before any member ran)."""

    record_extra = ("member",)

    def __init__(
        self,
        attacks: list[Any] | None = None,
        skip_unavailable: bool = True,
        fab: bool | dict[str, Any] = False,
        version: Literal["standard", "fast"] = "standard",
    ) -> None:
        if version not in VERSIONS:
            close = difflib.get_close_matches(str(version), VERSIONS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"autoattack: unknown version {version!r}{hint} (versions: {', '.join(VERSIONS)})"
            )
        if attacks is not None and version != "standard":
            raise ConfigError(
                f"autoattack: give either attacks or version (version {version!r} names its own)"
            )
        self.attacks = attacks
        self.skip_unavailable = skip_unavailable
        self.fab = fab
        self.version = version

    def members(self) -> list[tuple[str, Any]]:
        specs = list(self.attacks if self.attacks is not None else VERSIONS[self.version])
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
