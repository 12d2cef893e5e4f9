"""Validating a suite: everything a run would reject is rejected before it starts.

Three stages, run by :func:`~robustlab.runner.run_suite` before any unit (or any store row) is
created; ``robustlab validate`` runs the first two:

1. :func:`validate_components` -- no data or model needed: every name against its registry, every
   parameter against the component's signature (types, ranges, finiteness:
   :func:`~robustlab.core.registry.check_params`), every probe's levels against the component's
   level domain (:class:`~robustlab.core.types.Levels`, declared with its registration), and the
   number of work items against :data:`MAX_UNITS`.
2. :func:`validate_data` -- loads the suite's datasets (not its models): slice columns against the
   data's metadata columns, the fitting data of universal attacks (``fit_split``, outside the
   scored examples: :mod:`robustlab.runner.fitting`), and the number of units (with shards)
   against :data:`MAX_UNITS`.

3. :func:`validate_models` -- loads (or trains, cached) every model replicate: white-box attacks
   (``needs_grad``) only on models with input gradients, attack eps in the infinity norm at most
   the width of the model's input domain (:func:`check_model`), and the task against every data
   spec. ``robustlab run`` calls it before it opens the store; ``robustlab validate`` does not
   load models, so it skips this stage.

Example::

    validate_suite(Suite.from_yaml("suite.yaml"))  # ConfigError naming the culprit, or shards
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustlab.core.errors import ConfigError, RobustlabError
from robustlab.core.registry import REGISTRIES, check_params
from robustlab.core.types import Levels
from robustlab.runner.plan import data_key

if TYPE_CHECKING:
    from robustlab.runner.context import Context
    from robustlab.runner.suite import ComponentSpec, ProbeSpec, Suite

CONFORMAL_LEVELS = Levels(0, what="attack eps (0 = clean)")
MAX_UNITS = 100_000  # work units (model replicate x probe level x data shard) per run

_KINDS = {
    "perturbation": "perturbations", "attack": "attacks", "certifier": "certifiers",
    "diagnosis": "diagnoses",
}  # fmt: skip


def validate_suite(suite: Suite, ctx: Context | None = None) -> dict[str, int]:
    """Both stages; returns the number of shards of each data spec (keyed by :func:`data_key`)."""
    validate_components(suite)
    return validate_data(suite, ctx)


def validate_components(suite: Suite) -> None:
    """Names, parameters and level domains of every component, and the work-item cap."""
    _check("tasks", suite.task)
    for m in suite.models:
        params = dict(m.params)
        factory = REGISTRIES["models"].get(m.name)
        if "seed" in _signature_names(factory):
            params.setdefault("seed", m.replicates[0])
        check_params(factory, params, f"model {m.name!r}")
    _check("datasets", suite.data)
    for p in suite.probes:
        if p.kind == "evalset":
            assert p.data is not None
            _check("datasets", p.data)
        elif p.kind == "conformal":
            from robustlab.certify.conformal_probe import validate

            validate(p.name, dict(p.params), p.norm, list(p.levels))
            CONFORMAL_LEVELS.check(p.levels, f"conformal probe {p.display!r}")
        else:
            _check(_KINDS[p.kind], p)
            dom = REGISTRIES[_KINDS[p.kind]].levels(p.name, dict(p.params))
            if dom is not None:
                dom.check(p.levels, f"{p.kind} probe {p.display!r}")
            for spec in diagnosis_datasets(p).values():
                _check("datasets", spec)
    for name in suite.metrics:
        REGISTRIES["metrics"].get(name)
    items = count_units(suite, {})
    if items > MAX_UNITS:
        raise ConfigError(
            f"suite {suite.name!r} plans {items:,} work units before sharding the data (models x "
            f"replicates x probe levels); the limit is {MAX_UNITS:,}: use fewer levels or probes"
        )


def validate_data(suite: Suite, ctx: Context | None = None) -> dict[str, int]:
    """Load the suite's datasets: slice columns must exist and the units must fit the cap."""
    from robustlab.runner.context import process_context

    ctx = ctx or process_context()
    shards: dict[str, int] = {}
    columns: set[str] = set()
    for spec in [suite.data] + [p.data for p in suite.probes if p.data is not None]:
        data = load_data(ctx, spec)
        shards[data_key(spec)] = data.num_shards(suite.shard_size)
        if spec is suite.data:
            columns = set(data.meta)
    for s in suite.slices:
        wanted = [s.by] if s.by is not None else list(s.where or {})
        for col in wanted:
            if col not in columns:
                have = ", ".join(sorted(columns)) or "none"
                raise ConfigError(
                    f"slice {s.name or col!r}: data {suite.data.name!r} has no metadata column "
                    f"{col!r} (columns: {have})"
                )
    from robustlab.runner.fitting import check_fit_data

    check_fit_data(suite, ctx)  # universal attacks: fitting data outside the scored examples
    for p in suite.probes:  # a diagnosis's other datasets (OOD sets, fitting splits)
        others = {role: load_data(ctx, spec) for role, spec in diagnosis_datasets(p).items()}
        check = getattr(_diagnosis(p), "check_data", None)
        if check is not None:
            check(load_data(ctx, p.data or suite.data), others)
    n = count_units(suite, shards)
    if n > MAX_UNITS:
        raise ConfigError(
            f"suite {suite.name!r} plans {n:,} work units (models x replicates x probe levels x "
            f"data shards of {suite.shard_size}); the limit is {MAX_UNITS:,}: use fewer levels, "
            "fewer probes or a larger shard_size"
        )
    return shards


def _diagnosis(p: ProbeSpec) -> Any:
    return REGISTRIES["diagnoses"].create(p.name, dict(p.params)) if p.kind == "diagnosis" else None


def diagnosis_datasets(p: ProbeSpec) -> dict[str, ComponentSpec]:
    """The datasets a diagnosis probe names in its parameters ({} for other probes)."""
    from robustlab.runner.suite import ComponentSpec

    hook = getattr(_diagnosis(p), "datasets", None)
    if hook is None:
        return {}
    out = {}
    for role, spec in hook().items():
        if isinstance(spec, dict):
            try:
                spec = ComponentSpec(**spec)
            except Exception as e:  # pydantic's message, one line
                msg = " ".join(str(e).split())[:300]
                raise ConfigError(f"diagnosis probe {p.display!r}: {role} data: {msg}") from None
        out[role] = spec
    return out


def load_data(ctx: Context, spec: ComponentSpec) -> Any:
    """The dataset of ``spec``; a failure to load it is a one-line error naming the dataset."""
    try:
        return ctx.data(spec)
    except (RobustlabError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # a loader's own error (missing file, bad format): name the culprit
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(
            f"data {spec.name!r} could not be loaded: {type(e).__name__}: {msg}"
        ) from None


def validate_models(suite: Suite, ctx: Context) -> dict[str, str]:
    """The stage that needs the models: load (or train, cached) every model replicate, check it
    against the probes (:func:`check_model`) and the task against every data spec; returns the
    fingerprints (``"display#replicate"``). ``robustlab run`` calls it before the store is opened,
    so a suite refused here leaves no store file and no report folder."""
    task = ctx.task(suite.task)
    datas = [suite.data] + [p.data for p in suite.probes if p.data is not None]
    fingerprints: dict[str, str] = {}
    for m in suite.models:
        for rep in m.replicates:
            model = ctx.model(m, rep)
            check_model(suite, m.display, model)
            for spec in datas:
                task.check(model, ctx.data(spec))
            fingerprints[f"{m.display}#{rep}"] = model.fingerprint()
    return fingerprints


def check_model(suite: Suite, display: str, model: Any) -> None:
    """Checks that need a loaded model: a white-box attack (``needs_grad``) on a model without
    input gradients would only record errors (an accuracy of 0 over errored examples), and an
    attack's infinity-norm eps beyond the width of the model's input domain moves every input
    anywhere (a misread scale, e.g. 8 for 8/255)."""
    _check_capabilities(suite, display, model)
    for p in suite.probes:
        check = getattr(_diagnosis(p), "check_model", None)
        if check is not None and not (p.models and display not in p.models):
            check(model)
    domain = getattr(model, "domain", None)
    lo, hi = getattr(domain, "lo", None), getattr(domain, "hi", None)
    if not isinstance(lo, int | float) or not isinstance(hi, int | float):
        return
    width = float(hi) - float(lo)
    for p in suite.probes:
        if p.kind != "attack" or p.norm != "inf" or (p.models and display not in p.models):
            continue
        for i, eps in enumerate(p.levels):
            if eps > width:
                raise ConfigError(
                    f"attack probe {p.display!r}: level {i} (eps {eps:g}) exceeds the width "
                    f"{width:g} of model {display!r}'s input domain [{lo:g}, {hi:g}] (inf norm)"
                )


def _check_capabilities(suite: Suite, display: str, model: Any) -> None:
    grad = bool(getattr(getattr(model, "capabilities", None), "grad", False))
    for p in suite.probes:
        if p.kind != "attack" or grad or (p.models and display not in p.models):
            continue
        attack = REGISTRIES["attacks"].create(p.name, dict(p.params))
        if getattr(attack, "needs_grad", False):
            raise ConfigError(
                f"attack probe {p.display!r} needs input gradients, but model {display!r} "
                f"({type(model).__name__}) is black-box: use a score-based attack (e.g. square) "
                f"or restrict the probe to white-box models with models: [...]"
            )


def count_units(suite: Suite, shards: dict[str, int]) -> int:
    """Units :func:`~robustlab.runner.plan.plan` would make (data specs missing from ``shards``
    count as one shard), without building them."""
    total = 0
    for m in suite.models:
        per_rep = shards.get(data_key(suite.data), 1)  # the clean evaluation
        for p in suite.probes:
            if p.models is not None and m.display not in p.models:
                continue
            data = p.data if p.data is not None else suite.data
            levels = 1 if p.kind in ("certifier", "evalset") else len(p.run_levels)
            per_rep += levels * (1 if p.kind == "diagnosis" else shards.get(data_key(data), 1))
        total += per_rep * len(m.replicates)
    return total


def _signature_names(factory: Any) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _check(kind: str, spec: ComponentSpec | ProbeSpec) -> None:
    factory = REGISTRIES[kind].get(spec.name)
    check_params(factory, dict(spec.params), f"{kind[:-1]} {spec.name!r}")
