"""Executing one work unit: model x probe x level x shard -> tidy records.

Each probe kind is one small function in :data:`PROBES`; the task decides what a prediction and
correctness are, so classifiers, generators and rankers share this code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from robustlab.core.records import dumps
from robustlab.core.registry import attacks, certifiers, perturbations
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.data.base import Dataset
from robustlab.runner.context import Context, process_context, spec_json
from robustlab.runner.fitting import fitted_attack
from robustlab.runner.plan import WorkUnit
from robustlab.tasks.base import Evaluation

Rows = dict[str, list[Any]]  # column name -> one value per record (see core.records.COLUMNS)


def execute_unit(unit: WorkUnit, ctx: Context | None = None) -> Rows:
    """Run ``unit`` and return its records (deterministic under the unit's seed)."""
    ctx = ctx or process_context()
    task = ctx.task(unit.task)
    model = ctx.model(unit.model, unit.replicate)
    data = ctx.shard(unit.data, unit.shard, unit.shard_size)
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
    """Columnar records for one evaluated batch; JSON encoding is vectorised where it can be."""
    assert data.ids is not None
    n = len(data)
    extras = {**ev.extra, **(extra or {})}
    extra_json = records_json(extras, n) if extras else ["{}"] * n
    correct = ev.correct.tolist()
    return {
        "model": [unit.model.display] * n,
        "replicate": [unit.replicate] * n,
        "probe": [unit.probe_label] * n,
        "kind": [unit.kind] * n,
        "level": [float(level)] * n,
        "example_id": _per_data(data, "_ids_list", lambda: data.ids.tolist()),
        "label": _per_data(data, "_label_json", lambda: json_column(data.y)),
        "pred": json_column(ev.pred),
        "correct": [None if c != c else c for c in correct],
        "error": list(ev.error),
        "extra": extra_json,
        "meta": meta_json(data),  # cached per shard by the context's Dataset object
    }


def json_column(values: Any) -> list[str]:
    """JSON text per value, with fast paths for numbers (labels, predictions, extras): NaN and
    infinities are written as ``null``, like the rest of the records."""
    vals = values.tolist() if isinstance(values, torch.Tensor) else list(values)
    types = set(map(type, vals))
    if types <= {int}:
        return list(map(str, vals))
    if types <= {int, float, type(None)}:
        out = list(map(repr, vals))  # then the rare non-finite values: repr gives nan/inf/None
        if _NOT_FINITE.intersection(out):
            out = ["null" if s in _NOT_FINITE else s for s in out]
        return out
    return [dumps(v) for v in vals]


_NOT_FINITE = frozenset(("nan", "inf", "-inf", "None"))


def records_json(columns: dict[str, list[Any]], n: int) -> list[str]:
    """One JSON object per row from equal-length columns (the records' ``extra``), built column
    by column: ~10x faster than pandas' ``to_json`` on the runner's few-hundred-row units."""
    for k, v in columns.items():
        if len(v) != n:
            raise ValueError(f"record column {k!r} has {len(v)} values for {n} rows")
    # one %-template per unit: the keys are fixed, each row fills in its values
    template = "{" + ",".join(dumps(str(k)).replace("%", "%%") + ":%s" for k in columns) + "}"
    cols = [json_column(v) for v in columns.values()]
    return [template % row for row in zip(*cols, strict=True)]


def _per_data(data: Dataset, key: str, make: Callable[[], list[Any]]) -> list[Any]:
    """A column that is the same for every unit of a data shard (ids, labels), computed once per
    dataset object (the context caches shards, so units on one shard share it; do not mutate)."""
    cached = data.__dict__.get(key)
    if cached is None or len(cached) != len(data):
        cached = data.__dict__[key] = make()
    return cached


def meta_json(data: Dataset) -> list[str]:
    """The examples' metadata as JSON objects (one per example), computed once per dataset object."""
    cached = data.__dict__.get("_meta_json")
    if cached is not None and len(cached) == len(data):
        return cached
    if not data.meta:
        out = ["{}"] * len(data)
    else:
        out = pd.DataFrame(data.meta).to_json(orient="records", lines=True).splitlines()
    data.__dict__["_meta_json"] = out
    return out


def clean_evaluation(unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset) -> Any:
    """The unit's shard evaluated without perturbation, once per run and process for each (task,
    model replicate, data shard): the clean unit and the shard's attack units share it (an attack
    sweep over k levels would otherwise evaluate the same clean batch k + 1 times)."""
    key = (
        f"clean|{spec_json(unit.task)}|{spec_json(unit.model)}|{unit.replicate}|"
        f"{spec_json(unit.data)}|{unit.shard}|{unit.shard_size}"
    )
    return ctx.run_cached(key, lambda: task.evaluate(model, data.x, data.y))


def _clean(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    return _rows(unit, data, clean_evaluation(unit, ctx, task, model, data), 0.0)


def _perturbation(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    assert unit.probe is not None and unit.level is not None
    pert = ctx.component(perturbations, unit.probe)
    # per-example dataset fields (e.g. object masks) go to tasks that take them
    fields = getattr(data, "fields", None) if getattr(task, "takes_fields", False) else None
    x = task.perturb(pert, data.x, unit.level, rng, **(fields or {}))
    # per-example columns a perturbation declares (``record_extra``, e.g. the text constraints'
    # pass/fail), computed by its ``record(x, x_perturbed)`` from its input and output
    extra = pert.record(data.x, x) if getattr(pert, "record_extra", ()) else None
    return _rows(unit, data, task.evaluate(model, x, data.y), unit.level, extra)


def _attack(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    assert unit.probe is not None and unit.level is not None
    attack = ctx.component(attacks, unit.probe)
    fit = None
    if getattr(attack, "fit_split", None) is not None:  # declared by universal attacks
        attack, fit = fitted_attack(unit, ctx, attack, model)
    args = (attack, model, data, unit.level, unit.probe.norm, rng)
    if getattr(task, "takes_clean", False):
        ev, extra = task.attack(*args, clean=clean_evaluation(unit, ctx, task, model, data))
    else:
        ev, extra = task.attack(*args)
    if fit is not None:
        extra = {**extra, "fit_split": [attack.fit_split] * len(data),
                 "fit_examples": [len(fit)] * len(data)}  # fmt: skip
    return _rows(unit, data, ev, unit.level, extra)


def _certifier(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    assert unit.probe is not None
    cert = ctx.component(certifiers, unit.probe).certify(model, data.x, data.y, rng=rng)
    pred = cert.pred.cpu()
    radius = cert.radius.cpu()
    y = data.y.cpu() if isinstance(data.y, torch.Tensor) else torch.as_tensor(data.y)
    parts: list[Rows] = []
    for level in unit.probe.levels:
        ok = ((pred == y) & (radius >= level) & ~cert.abstained.cpu()).float()
        ev = Evaluation(pred.tolist(), ok, [None] * len(data))
        extra = {"radius": radius.tolist(), "abstained": cert.abstained.int().tolist()}
        extra |= {k: v.tolist() for k, v in cert.extra.items()}
        parts.append(_rows(unit, data, ev, level, extra))
    return {k: [v for p in parts for v in p[k]] for k in parts[0]}


def _conformal(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    """Prediction sets of the shard's test examples under attack ``level`` (calibrated once)."""
    from robustlab.certify import conformal_probe as cp

    assert unit.probe is not None and unit.level is not None
    p, levels = unit.probe, list(unit.probe.levels)
    settings = cp.validate(p.name, p.params, p.norm, levels)
    key = seed_from(unit.seed, unit.model.display, unit.replicate, unit.probe_label)
    cache = f"conformal|{key}|{unit.model.model_dump_json()}|{p.model_dump_json()}|{unit.data}"
    full = ctx.data(unit.data)
    predictor = ctx.cached(
        cache, lambda: cp.calibrate(p.name, settings, levels, model, full, unit.seed, key)
    )
    test, sets, extra = cp.evaluate(
        p.name, settings, predictor, model, data, unit.seed, unit.level, p.norm, rng
    )
    covered = sets.gather(1, test.y.view(-1, 1)).flatten().float() if len(test) else sets.sum(1)
    preds = [torch.nonzero(s).flatten().tolist() for s in sets]
    return _rows(unit, test, Evaluation(preds, covered, [None] * len(test)), unit.level, extra)


def _diagnosis(
    unit: WorkUnit, ctx: Context, task: Any, model: Any, data: Dataset, rng: ExampleRNG
) -> Rows:
    """A diagnosis over the unit's whole dataset (unsharded): one record per scored example of
    each set it returns, ``extra["role"]`` naming the set (see :mod:`robustlab.diagnose.base`)."""
    from robustlab.core.registry import diagnoses
    from robustlab.diagnose.base import ROLE_OFFSET, DiagnosisEnv

    assert unit.probe is not None and unit.level is not None
    diag = ctx.component(diagnoses, unit.probe)
    full = ctx.data(unit.data)
    rng = ExampleRNG.from_seed(
        seed_from(unit.seed, unit.model.display, unit.replicate, unit.probe_label, unit.level),
        full.ids,
    )
    sets = diag.run(model, full, float(unit.level), DiagnosisEnv(unit, ctx, rng))
    parts: list[Rows] = []
    roles: dict[str, int] = {}
    for s in sets:
        k = roles.setdefault(s.role, len(roles))
        d = s.data
        if k:  # ids of other sets move out of the suite data's range
            d = Dataset(d.x, d.y, d.name, d.ids + k * ROLE_OFFSET, d.meta, d.domain, d.classes)
        ev = Evaluation(s.pred, s.correct.float(), s.error or [None] * len(d))
        parts.append(_rows(unit, d, ev, unit.level, {**s.extra, "role": [s.role] * len(d)}))
    if not parts:
        return {c: [] for c in _rows(unit, full.take([]), Evaluation([], torch.zeros(0), []), 0.0)}
    return {c: [v for p in parts for v in p[c]] for c in parts[0]}


PROBES: dict[str, Callable[..., Rows]] = {
    "clean": _clean,
    "perturbation": _perturbation,
    "attack": _attack,
    "certifier": _certifier,
    "evalset": _clean,
    "conformal": _conformal,
    "diagnosis": _diagnosis,
}
