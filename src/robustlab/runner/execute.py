"""Executing one work unit: model x probe x level x shard -> tidy records.

Each probe kind is one small function in :data:`PROBES`; the task decides what a prediction and
correctness are, so classifiers, generators and rankers share this code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from robustlab.core.records import dumps
from robustlab.core.registry import attacks, certifiers, perturbations
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import ThreatModel
from robustlab.data.base import Dataset
from robustlab.runner.context import Context, process_context
from robustlab.runner.plan import WorkUnit
from robustlab.tasks.base import Evaluation, isolate, take

Rows = list[dict[str, Any]]


def execute_unit(unit: WorkUnit, ctx: Context | None = None) -> Rows:
    """Run ``unit`` and return its records (deterministic under the unit's seed)."""
    ctx = ctx or process_context()
    task = ctx.task(unit.task)
    model = ctx.model(unit.model, unit.replicate)
    data = ctx.data(unit.data).shard(unit.shard, unit.shard_size)
    assert data.ids is not None
    rng = ExampleRNG.from_seed(
        seed_from(unit.seed, unit.model.display, unit.replicate, unit.probe_label, unit.level),
        data.ids,
    )
    return PROBES[unit.kind](unit, ctx, task, model, data, rng)


def _rows(
    unit: WorkUnit,
    data: Dataset,
    ev: Evaluation,
    level: float,
    extra: dict[str, list[Any]] | None = None,
) -> Rows:
    assert data.ids is not None
    labels = data.y.tolist() if isinstance(data.y, torch.Tensor) else list(data.y)
    correct = ev.correct.tolist()
    extras = {**ev.extra, **(extra or {})}
    names = list(extras)
    meta_cols = list(data.meta)
    base = {
        "model": unit.model.display, "replicate": unit.replicate, "probe": unit.probe_label,
        "kind": unit.kind, "level": float(level),
    }  # fmt: skip
    rows = []
    for i, ex in enumerate(data.ids.tolist()):
        rows.append(
            {
                **base,
                "example_id": ex,
                "label": dumps(labels[i]),
                "pred": dumps(ev.pred[i]),
                "correct": None if correct[i] != correct[i] else correct[i],
                "error": ev.error[i],
                "extra": dumps({n: extras[n][i] for n in names}),
                "meta": dumps({c: data.meta[c][i] for c in meta_cols}),
            }
        )
    return rows


def _clean(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    return _rows(unit, data, task.evaluate(model, data.x, data.y), 0.0)


def _perturbation(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    assert unit.probe is not None and unit.level is not None
    pert = ctx.component(perturbations, unit.probe)
    x = task.perturb(pert, data.x, unit.level, rng)
    return _rows(unit, data, task.evaluate(model, x, data.y), unit.level)


def _attack(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    assert unit.probe is not None and unit.level is not None
    attack = ctx.component(attacks, unit.probe)
    threat = ThreatModel(unit.probe.norm, unit.level)
    clean = task.evaluate(model, data.x, data.y)
    n = len(data)

    def run(pos: list[int]) -> list[tuple[torch.Tensor, bool, int]]:
        idx = torch.tensor(pos, dtype=torch.long)
        res = attack(model, take(data.x, pos), take(data.y, pos), threat, rng=rng.take(idx))
        return list(zip(res.x_adv, res.success.tolist(), res.queries.tolist(), strict=True))

    outs, errs = isolate(run, n)
    x_adv = torch.stack([outs[i][0] if i in outs else data.x[i] for i in range(n)])
    ev = task.evaluate(model, x_adv, data.y)
    for i, msg in errs.items():
        ev.error[i], ev.pred[i] = msg, None
        ev.correct[i] = float("nan")
    dist = threat.distance(x_adv.to(data.x.device), data.x).tolist()
    extra = {
        "success": [int(outs[i][1]) if i in outs else None for i in range(n)],
        "queries": [outs[i][2] if i in outs else None for i in range(n)],
        "distance": dist,
        "clean_correct": clean.correct.tolist(),
    }
    return _rows(unit, data, ev, unit.level, extra)


def _certifier(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    assert unit.probe is not None
    cert = ctx.component(certifiers, unit.probe).certify(model, data.x, data.y, rng=rng)
    pred = cert.pred.cpu()
    radius = cert.radius.cpu()
    y = data.y.cpu() if isinstance(data.y, torch.Tensor) else torch.as_tensor(data.y)
    rows: Rows = []
    for level in unit.probe.levels:
        ok = ((pred == y) & (radius >= level) & ~cert.abstained.cpu()).float()
        ev = Evaluation(pred.tolist(), ok, [None] * len(data))
        extra = {"radius": radius.tolist(), "abstained": cert.abstained.int().tolist()}
        extra |= {k: v.tolist() for k, v in cert.extra.items()}
        rows += _rows(unit, data, ev, level, extra)
    return rows


PROBES: dict[str, Callable[..., Rows]] = {
    "clean": _clean,
    "perturbation": _perturbation,
    "attack": _attack,
    "certifier": _certifier,
    "evalset": _clean,
}
