"""Attack building blocks: goals, gradient access and the shared checks.

An attack is a callable ``attack(model, x, y, threat, *, goal=None, rng) -> AttackResult``. Its
hyperparameters live in ``__init__`` (scikit-learn style); the threat model and goal are arguments.

Goals are small stateless objects: ``loss(logits, y)`` (per example, to maximise) and
``success(logits, y)``. With :class:`Targeted`, ``y`` holds the target classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from robustlab.core.errors import CapabilityError, DomainError
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import AttackResult, ThreatModel


class Goal(Protocol):
    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def success(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


class Misclassified:
    """Untargeted: succeed when the top-1 prediction differs from ``y``; maximise cross-entropy."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    def success(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1) != y


class Targeted:
    """Targeted: succeed when the top-1 prediction equals the target ``y``; minimise its CE."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(logits, y, reduction="none")

    def success(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1) == y


def summed_loss(goal: Goal, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``goal.loss(logits, y).sum()``, fused into one cross-entropy call for the two built-in CE
    goals (exactly these classes: a subclass may change ``loss``). For attacks that need only the
    gradient: per-example losses are independent, so the sum's gradient is each one's."""
    if type(goal) is Misclassified:
        return F.cross_entropy(logits, y, reduction="sum")
    if type(goal) is Targeted:
        return -F.cross_entropy(logits, y, reduction="sum")
    return goal.loss(logits, y).sum()


class MarginMisclassified(Misclassified):
    """Untargeted with the margin (CW) loss: ``max_{j != y} z_j - z_y``, capped at ``kappa``."""

    def __init__(self, kappa: float = float("inf")) -> None:
        self.kappa = kappa

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
        return (other - true).clamp(max=self.kappa)


class Attack(Protocol):
    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        goal: Goal | None = None,
        rng: ExampleRNG,
    ) -> AttackResult: ...


def spec_model(attack: Any, spec: dict[str, Any]) -> Any:
    """The registered model ``spec`` ({name, params}) an attack names in its parameters (a
    transfer source, an oracle), created on the attack's first call and kept on the attack object
    for the later ones (hyperparameters are stored verbatim: ``__init__`` does no work)."""
    import json

    from robustlab.core.registry import models

    cache = attack.__dict__.setdefault("_spec_models", {})
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in cache:
        cache[key] = models.create(spec["name"], spec.get("params"))
    return cache[key]


def require_grad(model: Any, attack: str) -> None:
    if not getattr(model.capabilities, "grad", False):
        raise CapabilityError(
            f"{attack} needs input gradients, but {type(model).__name__} is black-box "
            "(capabilities.grad is false); use a score-based attack instead"
        )


def check_inputs(model: Any, x: torch.Tensor, y: torch.Tensor, attack: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise DomainError(f"{attack}: {x.shape[0]} inputs but {y.shape[0]} labels")
    model.domain.check(x, f"{attack} input")


def until_fooled(
    x: torch.Tensor,
    rounds: Iterable[Any],
    run: Callable[[torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None],
    success: torch.Tensor | None = None,
    queries: torch.Tensor | None = None,
) -> AttackResult:
    """Attack round by round (restarts, targets, ensemble members) only the examples not yet fooled.

    ``run(todo, r)`` attacks ``x[todo]`` in round ``r`` and returns ``(x_adv, success, queries)``
    for those examples (or None to skip the round); ``x_adv`` replaces the stored candidate of every
    example in ``todo``. Stops early once every example is fooled.
    """
    n = x.shape[0]
    best = x.clone()
    success = torch.zeros(n, dtype=torch.bool, device=x.device) if success is None else success
    queries = torch.zeros(n, dtype=torch.long, device=x.device) if queries is None else queries
    for r in rounds:
        todo = torch.nonzero(~success).flatten()
        if todo.numel() == 0:
            break
        out = run(todo, r)
        if out is None:
            continue
        xa, ok, q = out
        ok = ok() if callable(ok) else ok
        best[todo] = xa
        success[todo] = ok.to(x.device)
        queries[todo] += q.to(x.device)
    return AttackResult(best, success.cpu(), queries.cpu())


def split_hits(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Positions of the true and the false entries of ``hit`` (each in order), or None if none is
    true, with one device sync (boolean-mask indexing syncs once per indexed tensor on a GPU)."""
    n_hit = int(hit.sum())
    if n_hit == 0:
        return None
    order = torch.argsort(hit.to(torch.uint8), descending=True, stable=True)
    return order[:n_hit], order[n_hit:]


def compact_now(n_frozen: int, n_rows: int, steps_left: int, device: torch.device) -> bool:
    """Whether early stop should drop the ``n_frozen`` fooled rows from a batch of ``n_rows`` now.

    Fooled rows are frozen at once (they stop moving and count as done) but stay in the batch until
    dropping them pays: on a GPU every new batch shape costs cuDNN a fresh plan (~0.5 ms per conv
    call), so the batch shrinks only when at most half of it is live (log2(n) shapes at most); on
    the CPU when the frozen rows' remaining passes add up to 1/16 of a pass of the whole batch,
    more than the ~10 index ops of a compaction cost.
    """
    if device.type != "cpu":
        return 2 * n_frozen >= n_rows
    return 16 * n_frozen * steps_left >= n_rows


def final_success(
    model: Any,
    goal: Goal,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    decided: torch.Tensor | None = None,
) -> Callable[[], torch.Tensor]:
    """The deferred success check of :class:`AttackResult`: one forward pass on ``x_adv`` (only on
    the rows where ``decided`` is false, if given; rows already decided count as fooled), run when
    ``success`` is first read."""

    def check() -> torch.Tensor:
        with torch.no_grad():
            if decided is None:
                return goal.success(model.logits(x_adv), y).cpu()
            ok = decided.clone()
            todo = torch.nonzero(~ok).flatten()
            if todo.numel():
                ok[todo] = goal.success(model.logits(x_adv[todo]), y[todo]).to(ok.device)
            return ok.cpu()

    return check


def logits_and_grad(
    model: Any, x: torch.Tensor, y: torch.Tensor, goal: Goal
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the gradient of the summed goal loss w.r.t. the input, in one forward/backward
    (attacks that need no per-example loss values; APGD computes its own losses)."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.logits(xg)
        (grad,) = torch.autograd.grad(summed_loss(goal, logits, y), xg)
    return logits.detach(), grad
