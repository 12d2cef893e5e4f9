"""Per-process cache of loaded models, datasets and tasks (one per engine worker)."""

from __future__ import annotations

import inspect
import json
from collections import Counter
from typing import Any

from robustlab.core.registry import datasets, models, tasks
from robustlab.data.base import Dataset
from robustlab.runner.suite import ComponentSpec, ModelSpec


class Context:
    """Loads each model replicate, dataset and task once per process."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        # builds per kind of key ("model", "data", "shard", ...): what this process loaded, read
        # by the Ray engine to show that a worker loads a model once, not once per unit
        self.loads: Counter[str] = Counter()
        self._run: str | None = None
        self._run_cache: dict[str, Any] = {}

    def cached(self, key: str, build: Any) -> Any:
        """``build()`` once per process for ``key`` (e.g. a calibrated predictor shared by units)."""
        if key not in self._cache:
            self._cache[key] = build()
            self.loads[key.split("|", 1)[0]] += 1
        return self._cache[key]

    def start_run(self, run_id: str | None) -> None:
        """Units of run ``run_id`` follow: drop what :meth:`run_cached` kept for another run."""
        if run_id != self._run:
            self._run, self._run_cache = run_id, {}

    def run_cached(self, key: str, build: Any) -> Any:
        """``build()`` once per run for ``key``: results of model calls (e.g. a shard's clean
        evaluation) that units of one run share, but a later run must not reuse, since a model
        object may have changed in place between runs (models themselves are cached per process)."""
        if self._run is None:  # units executed outside a run share nothing
            return build()
        if key not in self._run_cache:
            self._run_cache[key] = build()
        return self._run_cache[key]

    def model(self, spec: ModelSpec, replicate: int) -> Any:
        def build() -> Any:
            params = dict(spec.params)
            factory = models.get(spec.name)
            if "seed" in inspect.signature(factory).parameters:
                params["seed"] = replicate
            return models.create(spec.name, params)

        return self.cached(f"model|{spec_json(spec)}|{replicate}", build)

    def data(self, spec: ComponentSpec) -> Dataset:
        return self.cached(
            f"data|{spec_json(spec)}", lambda: datasets.create(spec.name, spec.params)
        )

    def shard(self, spec: ComponentSpec, shard: int, size: int) -> Dataset:
        """Shard ``shard`` of the dataset (cached: many units share a shard)."""
        return self.cached(
            f"shard|{spec_json(spec)}|{shard}|{size}", lambda: self.data(spec).shard(shard, size)
        )

    def task(self, spec: ComponentSpec) -> Any:
        return self.cached(f"task|{spec_json(spec)}", lambda: tasks.create(spec.name, spec.params))

    def component(self, registry: Any, spec: Any) -> Any:
        return self.cached(
            f"{registry.kind}|{spec_json(spec)}", lambda: registry.create(spec.name, spec.params)
        )


def spec_json(spec: Any) -> str:
    """A component spec as canonical JSON: the part of a cache key that names it."""
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)


_PROCESS_CONTEXT: Context | None = None


def process_context() -> Context:
    """The shared context of this process (engines' workers reuse loaded models across units)."""
    global _PROCESS_CONTEXT
    if _PROCESS_CONTEXT is None:
        _PROCESS_CONTEXT = Context()
    return _PROCESS_CONTEXT
