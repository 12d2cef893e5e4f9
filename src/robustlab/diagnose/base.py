"""The diagnosis protocol: a suite probe that scores examples (see :mod:`robustlab.diagnose`).

A diagnosis is registered in :data:`robustlab.core.registry.diagnoses` with its hyperparameters as
keyword arguments of ``__init__`` (stored verbatim, no work), and implements::

    def run(self, model, data, level, env) -> list[Scored]

``data`` is the suite's whole dataset (a diagnosis unit is not sharded: detectors fit on one set
and score another, calibration bins span the whole set); ``level`` is the probe's level (0 when the
probe declares none); ``env`` (:class:`DiagnosisEnv`) loads the other datasets the diagnosis names
in its parameters (an OOD set, a fitting split), gives cached features
(:meth:`DiagnosisEnv.features`: one forward pass per model and data, shared by every diagnosis of a
run) and the unit's per-example random numbers. Each :class:`Scored` is one set of examples with a
``role`` ("test", "ood", "train", ...): its records carry ``extra["role"]``; sets other than the
suite's data get example ids offset by :data:`ROLE_OFFSET` times their position so ids stay unique.

Optional hooks, called before anything runs (``robustlab validate`` / ``run``):

* ``datasets(self) -> dict[str, ComponentSpec]``: the other datasets it loads, checked like the
  suite's (names, parameters; loaded in the data stage);
* ``check_data(self, data, others) -> None``: raise :class:`~robustlab.core.errors.ConfigError`
  for incompatible data (an OOD set with another input shape);
* ``check_model(self, model) -> None``: raise :class:`~robustlab.core.errors.CapabilityError`
  when the model lacks what the diagnosis needs (features of a black-box model: say which
  detectors work without them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.levels import Levels

if TYPE_CHECKING:
    from robustlab.core.rng import ExampleRNG
    from robustlab.data.base import Dataset
    from robustlab.runner.context import Context
    from robustlab.runner.plan import WorkUnit

ROLE_OFFSET = 1 << 40  # example ids of the k-th extra set are offset by k * ROLE_OFFSET
DIAGNOSIS_LEVELS = Levels(what="level")  # any finite number, unless a diagnosis declares its own


@dataclass
class Scored:
    """One set of examples a diagnosis scored: the records it becomes.

    ``pred`` and ``correct`` are what the model predicted and whether it was right (NaN where not
    applicable); ``extra`` maps a column name to one JSON-able value per example (scores, flags);
    ``error`` (optional) the per-example error messages (None where it worked), as a task's
    :class:`~robustlab.tasks.base.Evaluation` has them: they go to the records' ``error`` column.
    """

    data: Dataset
    pred: list[Any] | torch.Tensor
    correct: torch.Tensor
    extra: dict[str, list[Any]] = field(default_factory=dict)
    role: str = "test"
    error: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.data)
        if len(self.pred) != n or len(self.correct) != n:
            raise ValueError(
                f"diagnosis set {self.role!r}: {n} examples, {len(self.pred)} predictions, "
                f"{len(self.correct)} correctness values"
            )
        if self.error is not None and len(self.error) != n:
            raise ValueError(
                f"diagnosis set {self.role!r}: {len(self.error)} error values for {n} examples"
            )
        for k, v in self.extra.items():
            if len(v) != n:
                raise ValueError(
                    f"diagnosis set {self.role!r}: column {k!r} has {len(v)} values for {n}"
                )


class Diagnosis(Protocol):
    def run(self, model: Any, data: Dataset, level: float, env: DiagnosisEnv) -> list[Scored]: ...


class DiagnosisEnv:
    """What a diagnosis unit may use besides its model and data: other datasets, cached features,
    other models of the suite, the unit's random numbers."""

    def __init__(self, unit: WorkUnit, ctx: Context, rng: ExampleRNG) -> None:
        self.unit = unit
        self.ctx = ctx
        self.rng = rng

    @property
    def seed(self) -> int:
        """A seed for this unit (model, replicate, probe, level), for fitting randomness."""
        from robustlab.core.rng import seed_from

        u = self.unit
        return seed_from(u.seed, u.model.display, u.replicate, u.probe_label, u.level)

    def train_split(self, who: str) -> dict[str, Any]:
        """``{name, params}`` of the scored dataset (the probe's ``data`` or the suite's) with
        ``split: "train"``: the default fitting set of diagnoses that fit on training data. A
        :class:`ConfigError` naming ``who`` when the dataset has no ``split`` parameter or is
        already the train split."""
        import inspect

        from robustlab.core.registry import datasets

        u = self.unit
        spec = u.probe.data if u.probe is not None and u.probe.data else u.data
        params = dict(spec.params)
        try:
            sig = inspect.signature(datasets.get(spec.name)).parameters
        except (TypeError, ValueError):
            sig = {}
        split = params.get("split", sig["split"].default if "split" in sig else None)
        if "split" not in sig or split == "train":
            raise ConfigError(
                f"{who}: data {spec.name!r} has no other train split to default to: name the "
                f"training set with fit: {{name, params}}"
            )
        return {"name": spec.name, "params": {**params, "split": "train"}}

    def data(self, spec: Any) -> Dataset:
        """The dataset ``spec`` ({name, params} or a ComponentSpec), loaded once per process."""
        from robustlab.runner.suite import ComponentSpec

        if isinstance(spec, dict):
            try:
                spec = ComponentSpec(**spec)
            except Exception as e:  # pydantic's message, one line
                raise ConfigError(f"dataset spec {spec!r}: {' '.join(str(e).split())}") from None
        return self.ctx.data(spec)

    def features(
        self, model: Any, data: Dataset, layers: tuple[str, ...] = ("penultimate",), key: str = ""
    ) -> dict[str, torch.Tensor]:
        """``{"logits": [N, C], layer: [N, D], ...}`` of ``data`` under ``model``, from one batched
        forward pass, cached for the run under the identity of the ``model`` and ``data`` objects
        (and ``key``): the runner's context loads each model replicate and dataset spec once per
        process, so every diagnosis of a run that asks for the same features shares one pass,
        while two differently configured datasets (or another model: a compared model, a
        checkpoint) never share an entry, whatever their names. Both objects are kept alive by the
        entry, so an identity is never reused within a run; do not change either in place after
        reading its features (prune a copy). A pass also
        reads ``penultimate`` when the model has one (a copy of one small tensor), so a diagnosis
        asking for logits only (calibration) and one asking for the penultimate layer (OOD
        detectors) share a pass in either order; other layers missing from the cache cost a pass
        over them."""
        from robustlab.diagnose.features import extract, has_penultimate

        ckey = f"features|{id(model)}|{id(data)}|{key}"
        cache: dict[str, Any] = self.ctx.run_cached(ckey, lambda: {_PIN: (model, data)})
        if cache[_PIN][0] is not model or cache[_PIN][1] is not data:  # unreachable while pinned
            raise AssertionError("feature cache entry for another model or dataset")
        missing = [name for name in dict.fromkeys(layers) if name not in cache]
        if "logits" not in cache or missing:
            extra = ["penultimate"] if "penultimate" not in cache and has_penultimate(model) else []
            try:
                got = extract(model, data.x, tuple(dict.fromkeys([*missing, *extra])))
            except ConfigError:
                if not extra or "penultimate" in missing:
                    raise
                got = extract(model, data.x, tuple(missing))  # its last Linear cannot be read
            cache.update(got)
        return {name: cache[name] for name in dict.fromkeys(("logits", *layers))}


_PIN = "\0objects"  # the cache entry's (model, data): keeps their ids from being reused


def require_finite(name: str, t: torch.Tensor) -> None:
    """Refuse non-finite scores or features with a message naming them."""
    if not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{name}: non-finite values (NaN or inf) in the model's outputs")
