"""Universal attacks in a suite: fitted on the split they name, never on the scored examples.

An attack that declares ``fit_split`` (e.g. ``universal_patch``: one patch for all inputs) is
fitted by the runner on the suite's data source with ``split`` replaced by ``fit_split``, leaving
out every example id the suite scores and keeping at most ``fit_size`` examples; the fitted copy
is shared by all scored shards of a run (per model replicate, probe and level). :func:`fit_data`
is also run by validation, so a split with nothing outside the scored data, or a data source
without splits, is refused before the run starts.

Example::

    fitted, fit = fitted_attack(unit, ctx, ctx.component(attacks, unit.probe), model)
"""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import attacks, datasets
from robustlab.core.rng import ExampleRNG, seed_from
from robustlab.core.types import ThreatModel
from robustlab.data.base import Dataset
from robustlab.runner.context import spec_json

if TYPE_CHECKING:
    from robustlab.runner.context import Context
    from robustlab.runner.plan import WorkUnit
    from robustlab.runner.suite import ComponentSpec, Suite


def fit_data(ctx: Context, attack: Any, name: str, data: ComponentSpec) -> Dataset:
    """The examples ``attack`` is fitted on when a suite scores ``data`` (ConfigError if none)."""
    split = attack.fit_split
    if "split" not in inspect.signature(datasets.get(data.name)).parameters:
        raise ConfigError(
            f"attack {name!r} fits on the {split!r} split, but data source {data.name!r} has no "
            "'split' parameter: use a data source with splits"
        )
    spec = data.model_copy(update={"params": {**data.params, "split": split}})
    full, scored = ctx.data(spec), ctx.data(data)
    assert full.ids is not None and scored.ids is not None
    keep = torch.nonzero(~torch.isin(full.ids, scored.ids)).flatten()[: attack.fit_size]
    if not len(keep):
        raise ConfigError(
            f"attack {name!r}: the {split!r} split of {data.name!r} has no examples outside the "
            "scored data; set fit_split to another split"
        )
    return full.take(keep)


def fitted_attack(unit: WorkUnit, ctx: Context, attack: Any, model: Any) -> tuple[Any, Dataset]:
    """A fitted copy of ``attack`` (the cached component stays unfitted) and its fitting data,
    computed once per run for each model replicate, probe, level and scored data."""
    assert unit.probe is not None and unit.level is not None
    probe, level = unit.probe, unit.level

    def build() -> tuple[Any, Dataset]:
        fit = fit_data(ctx, attack, probe.name, unit.data)
        assert fit.ids is not None
        seed = seed_from(unit.seed, unit.model.display, unit.replicate, unit.probe_label, level,
                         "fit")  # fmt: skip
        fitted = copy.copy(attack).fit(
            model, fit.x, fit.y, ThreatModel(probe.norm, level),
            rng=ExampleRNG.from_seed(seed, fit.ids),
        )  # fmt: skip
        return fitted, fit

    key = (
        f"fit|{spec_json(probe)}|{spec_json(unit.model)}|{unit.replicate}|"
        f"{spec_json(unit.data)}|{level}|{unit.seed}"
    )
    return ctx.run_cached(key, build)


def check_fit_data(suite: Suite, ctx: Context) -> None:
    """Validation: every attack probe that fits on a split finds fitting data (before any unit)."""
    for p in suite.probes:
        if p.kind == "attack":
            attack = ctx.component(attacks, p)
            if getattr(attack, "fit_split", None) is not None:  # declared by universal attacks
                fit_data(ctx, attack, p.name, p.data if p.data is not None else suite.data)
