"""The runner: validate a suite, plan it, execute pending units, store every finished unit."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from robustlab.runner.budget import Budget
from robustlab.runner.context import process_context
from robustlab.runner.engines import LocalEngine, RayEngine
from robustlab.runner.plan import WorkUnit, plan
from robustlab.runner.suite import Suite
from robustlab.runner.validation import validate_models, validate_suite
from robustlab.runner.writer import UnitWriter
from robustlab.store import Store
from robustlab.store.cache import use_store

_PACKAGES = (
    ("robustlab", "robustlab"), ("torch", "torch"), ("numpy", "numpy"),
    ("scikit-learn", "sklearn"), ("scipy", "scipy"), ("pandas", "pandas"), ("ray", "ray"),
)  # fmt: skip


def _version(name: str) -> str | None:
    with contextlib.suppress(PackageNotFoundError):
        return version(name)
    return None


def environment(engine: str) -> dict[str, Any]:
    """Versions, platform and hardware, recorded with each run for reproducibility."""
    import torch

    pkgs = {}
    for name, module in _PACKAGES:
        if module in sys.modules:  # the version of what this process actually runs
            pkgs[name] = getattr(sys.modules[module], "__version__", None) or _version(name)

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": pkgs,
        "engine": engine,
    }


def _model_facts(suite: Suite, ctx: Any) -> dict[str, dict[str, Any]]:
    """What the report needs to know of the loaded models, keyed ``"display#replicate"``:
    ``training``, the provenance of each model trained by robustlab (spec, per-epoch history;
    see :mod:`robustlab.training`) as plain JSON data, and ``input_domains``, ``[lo, hi]`` of each
    model's input domain (the gradient-masking check's unbounded epsilon), and ``defences``, what a
    defended model declares of its defence (EOT, BPDA: read by the gradient-masking checks). Empty
    ones are left out."""
    training, domains, defences = {}, {}, {}
    for m in suite.models:
        for rep in m.replicates:
            model, key = ctx.model(m, rep), f"{m.display}#{rep}"  # loaded already: cached
            prov = getattr(model, "provenance", None)
            if isinstance(prov, dict):
                training[key] = _plain(json.loads(json.dumps(prov, default=str)))
            domain = getattr(model, "domain", None)
            lo, hi = getattr(domain, "lo", None), getattr(domain, "hi", None)
            if isinstance(lo, int | float) and isinstance(hi, int | float):
                domains[key] = [float(lo), float(hi)]
            if isinstance(getattr(model, "defence", None), dict):
                defences[key] = _plain(json.loads(json.dumps(model.defence, default=str)))
    facts = {"training": training, "input_domains": domains, "defences": defences}
    return {k: v for k, v in facts.items() if v}


def _plain(v: Any) -> Any:
    """JSON data with non-finite floats as ``None`` (the report's JSON is strict)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def run_suite(
    suite: Suite,
    store: Store,
    *,
    engine: LocalEngine | RayEngine | None = None,
    resume: bool = True,
    progress: bool = True,
    validated: dict[str, str] | None = None,
    budget: Budget | None = None,
) -> str:
    """Run ``suite`` and return the run id.

    With ``resume`` (default), an unfinished run of the same suite is continued: its finished units
    are skipped. Bad configuration and incompatible model/data raise before anything is stored.
    ``validated``: what :func:`validate_models` returned for this very ``suite`` object in this
    process (``robustlab run`` checks the models before it opens the store), so that the model
    stage (a forward pass per data spec, each weight fingerprint) is not repeated.
    ``budget`` (:mod:`robustlab.runner.budget`): once reached, no further unit starts and the run
    is stored ``interrupted`` (resumable) with a message naming the budget.
    """
    started = time.monotonic()
    engine = engine or LocalEngine()
    ctx = process_context()
    shards = validate_suite(suite, ctx)  # the same checks as `robustlab validate`
    # loaded models against probes and data
    fingerprints = validate_models(suite, ctx) if validated is None else dict(validated)
    env = environment(engine.name) | _model_facts(suite, ctx)  # stored with the run
    units = plan(suite, shards)
    engine.start()  # an unreachable Ray cluster is refused before a run is stored
    suite_hash = suite.content_hash()
    run_id = store.find_resumable(suite_hash) if resume else None
    if run_id is not None:
        store.resume_run(run_id, env)
    else:
        run_id = store.create_run(
            suite.name, suite_hash, json.dumps(suite.model_dump(mode="json")), suite.seed,
            len(units), env, fingerprints,
        )  # fmt: skip
    done = store.done_units(run_id)
    pending = [u for u in units if u.key not in done]
    failures, finished, spent = 0, 0, None
    try:  # adapters with a response cache keep it in this run's database (store/cache.py)
        # connect_url: workers must connect (it may hold a password: never printed or stored)
        with use_store(store.connect_url), UnitWriter(store, run_id) as writer:
            results = engine.map(pending, run_id)
            shown = _progress(results, pending, progress, run_id)
            try:
                for unit, rows, err, secs in shown:
                    writer.put((unit.key, unit.describe(), rows, secs, err))
                    failures += err is not None
                    finished += 1
                    if budget is not None and finished < len(pending):
                        spent = budget.reached(finished, time.monotonic() - started)
                        if spent:
                            break  # between units: the finished ones are queued for the writer
            finally:  # no further unit starts (a Ray engine cancels what it submitted)
                shown.close()
                if hasattr(results, "close"):
                    results.close()
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", "interrupted; rerun the same suite to resume")
        raise
    if spent:
        done_now = len(units) - len(pending) + finished
        store.finish_run(
            run_id, "interrupted",
            f"budget reached ({spent}): {done_now} of {len(units)} units done; rerun the same "
            "suite to resume",
        )  # fmt: skip
        return run_id
    status = "failed" if failures else "complete"
    message = f"{failures} of {len(units)} units failed" if failures else None
    store.finish_run(run_id, status, message)
    return run_id


def _progress(
    results: Iterator[tuple[WorkUnit, Any, Any, float]],
    pending: list[WorkUnit],
    enabled: bool,
    run_id: str,
) -> Iterator[tuple[WorkUnit, Any, Any, float]]:
    if not enabled or not pending:
        yield from results
        return
    from rich import get_console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[unit]}"),
    )
    # the bar redraws from a thread of its own, which takes the interpreter from the model's
    # thread each time: 4 times a second in a terminal (rich's default is 10), and never where
    # nothing is drawn until the end (output to a file or pipe: the final bar is printed alike)
    console = get_console()  # rich's default, as before
    live = console.is_terminal or console.is_jupyter
    with Progress(
        *cols, console=console, transient=False, auto_refresh=live, refresh_per_second=4
    ) as bar:
        t = bar.add_task(f"run {run_id}", total=len(pending), unit="")
        for item in results:
            bar.update(t, advance=1, unit=item[0].describe())
            yield item
