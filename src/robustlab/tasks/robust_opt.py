"""Two-stage robust optimization as a task (S24): Neur2RO against exact CCG, per instance.

Dumouchelle et al., "Neur2RO" (ICLR 2024). The data are instances (``robust-knapsack``), the
model is a trained second-stage value network (``neur2ro-knapsack``). ``evaluate`` solves each
instance exactly by column-and-constraint generation (:func:`robustlab.optim.knapsack.ccg`) and
with Neur2RO (:func:`robustlab.optim.neur2ro.neur2ro`: the network replaces the second stage in the
CCG MILPs), evaluates Neur2RO's first-stage decision exactly, and returns one record per instance:

* ``pred``: Neur2RO's exact robust objective; ``correct``: relative gap ``<= tolerance``;
* extras: ``gap`` (``(neur2ro - ccg) / |ccg|``, >= 0 up to solver tolerance), ``objective_ccg``,
  ``seconds_ccg``, ``seconds_neur2ro`` (wall time of each solve loop, training excluded),
  ``iterations_ccg``, ``iterations_neur2ro``, ``same_decision``.

An infeasible or malformed instance becomes that example's error record; the others are kept.
The report section ``robust_opt`` summarises gap and time per model. Perturbation and attack
probes do not apply (the adversary is inside the problem: the uncertainty set).

Example (suite)::

    task: {name: robust-optimization, params: {tolerance: 0.05}}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustlab.core.errors import CapabilityError, ConfigError, RobustlabError
from robustlab.core.registry import tasks
from robustlab.core.types import NonNegative
from robustlab.data.base import Dataset
from robustlab.optim.knapsack import Instance, ccg
from robustlab.optim.neur2ro import ValueNetwork, neur2ro
from robustlab.tasks.base import Evaluation

COLUMNS = ("gap", "objective_ccg", "seconds_ccg", "seconds_neur2ro", "iterations_ccg",
           "iterations_neur2ro", "same_decision")  # fmt: skip


@tasks.register("robust-optimization")
class RobustOptimizationTask:
    """Gap and time of Neur2RO against exact CCG, one record per instance."""

    def __init__(self, tolerance: NonNegative = 0.05) -> None:
        self.tolerance = tolerance

    def evaluate(self, model: Any, x: list[Any], y: list[Any]) -> Evaluation:
        n = len(x)
        pred: list[Any] = [None] * n
        error: list[str | None] = [None] * n
        extra: dict[str, list[Any]] = {c: [None] * n for c in COLUMNS}
        correct = torch.full((n,), float("nan"), dtype=torch.float64)
        for i, inst in enumerate(x):  # a MILP loop per instance: there is no batched form
            try:
                if not isinstance(inst, Instance):
                    raise ConfigError(f"not a robust optimization instance: {type(inst).__name__}")
                exact, learned = ccg(inst), neur2ro(model, inst)
            except RobustlabError as e:
                error[i] = f"{type(e).__name__}: {e}"[:500]
                continue
            gap = (learned.objective - exact.objective) / max(abs(exact.objective), 1e-9)
            pred[i] = learned.objective
            correct[i] = float(gap <= self.tolerance)
            row = (gap, exact.objective, exact.seconds, learned.seconds, exact.iterations,
                   learned.iterations, bool(np.array_equal(exact.x, learned.x)))  # fmt: skip
            for c, v in zip(COLUMNS, row, strict=True):
                extra[c][i] = v
        return Evaluation(pred, correct, error, extra)

    def perturb(self, perturbation: Any, x: Any, level: float, rng: Any) -> Any:
        raise ConfigError("robust-optimization takes no perturbation probes (the uncertainty "
                          "set is part of each instance)")  # fmt: skip

    def check(self, model: Any, data: Dataset) -> None:
        if not isinstance(model, ValueNetwork):
            raise CapabilityError(
                f"robust-optimization needs a trained value network (model 'neur2ro-knapsack'), "
                f"got {type(model).__name__}"
            )
        if not isinstance(data.x, list) or not all(isinstance(i, Instance) for i in data.x):
            raise ConfigError(f"robust-optimization needs instances ({data.name}): use data "
                              "'robust-knapsack'")  # fmt: skip
        bad = {(i.n, i.gamma) for i in data.x} - {(model.n, model.gamma)}
        if bad:
            raise ConfigError(f"robust-optimization: the network is trained for n={model.n}, "
                              f"gamma={model.gamma}; data {data.name} has (n, gamma) in {bad}")  # fmt: skip
