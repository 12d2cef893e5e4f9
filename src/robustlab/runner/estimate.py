"""Cost up front: what a suite will cost before it runs (``robustlab plan SUITE --estimate``).

Counts are **example passes** (one example through the model once): ``forward`` passes, of which
``backward`` are followed by a backward pass to the input (a gradient step). A unit's count is the
sum of

- its probe's model passes: ``clean``, a ``perturbation`` and an ``evalset`` evaluate each example
  once; an ``attack`` costs what the attack's optional ``cost(n)`` hook declares for ``n``
  examples (FGSM: 1 forward/backward; PGD: ``steps x restarts`` forward/backward, an upper bound
  with early stopping) plus the task's one evaluation of the adversarial batch; a ``certifier``
  costs what its ``cost(n)`` declares (Gaussian smoothing: ``n0 + n`` noisy forwards); other kinds
  (diagnoses, conformal) and components without the hook are ``unknown`` (shown as such, never
  guessed);
- the clean evaluation of the unit's shard, which the runner computes once per run and shares
  between the clean unit and the shard's attack units (``runner/execute.py:clean_evaluation``).

The hook is the component's own knowledge of its parameters, not a table keyed by name::

    class MyAttack:
        def cost(self, n: int) -> dict[str, int]:
            return {"forward": self.steps * n, "backward": self.steps * n}

Generators count ``prompts`` instead (one per example per unit; a rerun costs none: the store
caches answers); with ``price_prompt_per_1k``/``price_completion_per_1k`` in an HTTP model's params
the cost is ``tokens x price`` with prompt tokens estimated as characters / 4 and completion
tokens as the task's or else the adapter's ``max_tokens`` (an upper bound). Prompts are counted
as sent to the adapter: answers already in the store's cache cost no request.

The time estimate comes from a short **calibration**: a few forward and forward/backward passes of
each model on a batch of the suite's own data (the shard size, at most 64 examples), timed as the
median of 3 repeats, then ``(forward - backward) x t_forward + backward x t_backward`` per model,
plus a fixed per-unit overhead (records, store: ~3 ms measured, docs/cost.md).

Example::

    est = estimate(Suite.from_yaml("demo.yaml"), calibrate=True)
    est.totals["forward"], est.seconds
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from robustlab.runner.context import Context, process_context
from robustlab.runner.plan import WorkUnit, data_key, plan
from robustlab.runner.suite import Suite

UNIT_OVERHEAD_S = 0.003  # records, RNG keys and store writes per unit (docs/architecture.md)
CALIBRATION_BATCH = 64
COUNTS = ("forward", "backward", "prompts", "prompt_tokens", "completion_tokens")


@dataclass
class UnitCost:
    """Estimated passes of one unit; ``known`` is False where a component declares no cost."""

    unit: WorkUnit
    n: int
    counts: dict[str, int] = field(default_factory=dict)
    known: bool = True
    cost_usd: float | None = None


@dataclass
class Estimate:
    """A suite's estimated cost: per-unit counts, totals, and (after calibration) seconds."""

    units: list[UnitCost]
    seconds: float | None = None
    per_model_seconds: dict[str, float] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    uncalibrated: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {k: sum(u.counts.get(k, 0) for u in self.units) for k in COUNTS}

    @property
    def unknown(self) -> list[UnitCost]:
        return [u for u in self.units if not u.known]

    @property
    def cost_usd(self) -> float | None:
        costs = [u.cost_usd for u in self.units if u.cost_usd is not None]
        return sum(costs) if costs else None

    def by_probe(self) -> list[dict[str, Any]]:
        """One row per (model, probe): units, passes, unknown units (the CLI's table)."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for u in self.units:
            key = (u.unit.model.display, u.unit.probe_label)
            r = rows.setdefault(
                key,
                {"model": key[0], "probe": key[1], "kind": u.unit.kind, "units": 0, "unknown": 0,
                 **dict.fromkeys(COUNTS, 0)},
            )  # fmt: skip
            r["units"] += 1
            r["unknown"] += not u.known
            for k in COUNTS:
                r[k] += u.counts.get(k, 0)
        return list(rows.values())


def _shard_len(total: int, shard: int, size: int) -> int:
    return max(0, min(size, total - shard * size))


def _defined_by(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def _hook(component: Any, n: int, method: str) -> dict[str, int] | None:
    """``component.cost(n)``, trusted only where the class that defines ``cost`` also defines
    ``method`` (a subclass that overrides ``certify`` but not ``cost`` has unknown cost)."""
    fn = getattr(component, "cost", None)
    if not callable(fn):
        return None
    cls = type(component)
    if _defined_by(cls, "cost") is not _defined_by(cls, method):
        return None
    c = fn(n)
    return {k: int(c.get(k, 0)) for k in ("forward", "backward")}


def _is_generator(model: Any) -> bool:
    return callable(getattr(model, "generate", None)) and not callable(
        getattr(model, "logits", None)
    )


def unit_cost(unit: WorkUnit, n: int, ctx: Context, model: Any) -> UnitCost:
    """The passes of ``unit`` on a shard of ``n`` examples, without the shared clean evaluation."""
    from robustlab.core.registry import attacks, certifiers

    kind = unit.kind
    if _is_generator(model):
        if kind in ("clean", "perturbation", "evalset"):
            return UnitCost(unit, n, {"prompts": n})
        return UnitCost(unit, n, {}, known=False)
    if kind in ("clean", "perturbation", "evalset"):
        # the clean unit's evaluation is the shared one, counted by estimate()
        return UnitCost(unit, n, {"forward": 0 if kind == "clean" else n})
    assert unit.probe is not None
    if kind == "attack":
        c = _hook(ctx.component(attacks, unit.probe), n, "__call__")
        if c is None:
            return UnitCost(unit, n, {}, known=False)
        return UnitCost(unit, n, {"forward": c["forward"] + n, "backward": c["backward"]})
    if kind == "certifier":
        c = _hook(ctx.component(certifiers, unit.probe), n, "certify")
        return UnitCost(unit, n, c or {}, known=c is not None)
    return UnitCost(unit, n, {}, known=False)  # diagnosis, conformal: declared by no hook yet


def estimate(
    suite: Suite, ctx: Context | None = None, *, calibrate: bool = False, repeats: int = 3
) -> Estimate:
    """Units and passes of ``suite`` (validated first); with ``calibrate``, estimated seconds.

    The clean evaluation of each (model replicate, shard) is counted once, on the clean unit, the
    way a full run computes it; a resumed run that recomputes it for attack units costs more.
    """
    from robustlab.runner.validation import validate_suite

    ctx = ctx or process_context()
    shards = validate_suite(suite, ctx)
    units = plan(suite, shards)
    lengths = {data_key(u.data): len(ctx.data(u.data)) for u in units}
    costs: list[UnitCost] = []
    clean_done: set[tuple[str, int, str, int]] = set()
    for u in units:
        model = ctx.model(u.model, u.replicate)
        n = _shard_len(lengths[data_key(u.data)], u.shard, u.shard_size)
        if u.kind == "diagnosis":
            n = lengths[data_key(u.data)]
        c = unit_cost(u, n, ctx, model)
        shared = u.kind in ("clean", "attack") and not _is_generator(model)
        key = (u.model.display, u.replicate, data_key(u.data), u.shard)
        if shared and key not in clean_done:
            clean_done.add(key)
            c.counts["forward"] = c.counts.get("forward", 0) + n
        if c.counts.get("prompts"):
            _price(c, u, ctx, model)
        costs.append(c)
    est = Estimate(costs)
    if calibrate:
        _calibrate(est, suite, ctx, repeats)
    return est


def _price(c: UnitCost, u: WorkUnit, ctx: Context, model: Any) -> None:
    """Token counts (and cost, with prices in the model's params) of a generator unit."""
    data = ctx.shard(u.data, u.shard, u.shard_size)
    texts = data.x if isinstance(data.x, list) else []
    c.counts["prompt_tokens"] = sum(math.ceil(len(str(t)) / 4) for t in texts)
    # the task's max_tokens overrides the adapter's default (tasks/generation.py)
    max_tokens = getattr(ctx.task(u.task), "max_tokens", None) or (
        getattr(model, "defaults", None) or {}
    ).get("max_tokens")
    if max_tokens:
        c.counts["completion_tokens"] = int(max_tokens) * c.counts["prompts"]
    pp = u.model.params.get("price_prompt_per_1k")
    pc = u.model.params.get("price_completion_per_1k")
    if pp is not None or pc is not None:
        c.cost_usd = (
            c.counts["prompt_tokens"] * float(pp or 0)
            + c.counts.get("completion_tokens", 0) * float(pc or 0)
        ) / 1000


def calibration_times(model: Any, x: Any, y: Any, repeats: int = 3) -> dict[str, float]:
    """Seconds per example of a forward pass and of a forward/backward pass to the input
    (cross-entropy loss, as the gradient attacks take it), each the median of ``repeats``."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]

    def fwd() -> None:
        with torch.no_grad():
            model.logits(x)

    def fwd_bwd() -> None:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model.logits(xg), y, reduction="sum")
            torch.autograd.grad(loss, xg)

    out = {}
    for name, fn in (("forward", fwd), ("backward", fwd_bwd)):
        fn()  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts) / n
    return out


def _calibrate(est: Estimate, suite: Suite, ctx: Context, repeats: int) -> None:
    """Seconds per model from timed passes on the suite's data; models that cannot be timed
    (generators: their time is the server's) go to ``est.uncalibrated``."""
    import torch

    data = ctx.data(suite.data)
    total = 0.0
    for m in suite.models:
        model = ctx.model(m, m.replicates[0])  # replicates share the architecture
        mine = [u for u in est.units if u.unit.model.display == m.display]
        fwd = sum(u.counts.get("forward", 0) for u in mine)
        bwd = sum(u.counts.get("backward", 0) for u in mine)
        secs = UNIT_OVERHEAD_S * len(mine)
        k = max(1, min(suite.shard_size, len(data), CALIBRATION_BATCH))
        sub = data.take(list(range(k)))
        if _is_generator(model) or not callable(getattr(model, "logits", None)):
            est.uncalibrated.append(m.display)
        elif isinstance(sub.x, torch.Tensor) and getattr(model.capabilities, "grad", False):
            y = sub.y if isinstance(sub.y, torch.Tensor) else torch.as_tensor(sub.y)
            t = est.timings[m.display] = calibration_times(model, sub.x, y.long(), repeats)
            secs += (fwd - bwd) * t["forward"] + bwd * t["backward"]
        else:  # no input gradients (text, black-box): forward passes only
            t = est.timings[m.display] = calibration_times_forward(model, sub.x, repeats)
            secs += fwd * t["forward"]
        est.per_model_seconds[m.display] = secs
        total += secs
    est.seconds = total


def calibration_times_forward(model: Any, x: Any, repeats: int = 3) -> dict[str, float]:
    """Seconds per example of a forward pass only (models without gradients, text inputs)."""
    import torch

    with torch.no_grad():
        model.logits(x)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.logits(x)
            ts.append(time.perf_counter() - t0)
    return {"forward": statistics.median(ts) / len(x)}
