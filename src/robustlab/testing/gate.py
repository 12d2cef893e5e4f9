"""``assert_robust``: a robustness regression gate inside a project's own tests.

Runs a suite on a (new version of a) model and gates the run against a baseline with
:func:`robustlab.gate.gate` (paired permutation tests, Benjamini-Hochberg false-discovery control,
a practical ``max_drop``): the test fails with an :class:`AssertionError` listing each regressed
(model, probe, level) row, and passes otherwise. Example::

    from robustlab.testing.gate import assert_robust

    def test_new_model_is_not_less_robust(tmp_path):
        store = Store(tmp_path / "s.db")
        base = run_suite(suite, store)                       # or a run id kept from the release
        assert_robust("digits-cnn", suite, baseline=base, store=store, max_drop="2pp")

With the pytest plugin (``pytest_plugins = ["robustlab.testing.pytest_plugin"]`` in a
``conftest.py``) the ``robust_gate`` fixture is ``assert_robust`` bound to a per-test store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.gate import GateResult, gate, gate_runs, parse_max_drop


def _suite(suite: Any) -> Any:
    from robustlab.runner.suite import Suite

    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, str | Path):
        from robustlab.runner.loading import load_suite

        return load_suite(str(suite))
    raise ConfigError(f"suite must be a Suite, a YAML path or a bundled suite name, not {suite!r}")


def _with_model(suite: Any, model: Any) -> Any:
    """``suite`` with its models replaced by ``model`` (a registered name, a spec mapping or a
    :class:`ModelSpec`); a bare name keeps the suite's first model's label and replicates, so the
    run is the same suite as the baseline's under the same label."""
    from robustlab.runner.suite import ModelSpec

    if model is None:
        return suite
    if isinstance(model, str):
        first = suite.models[0]
        spec = ModelSpec(name=model, label=first.label or first.name, replicates=first.replicates)
    elif isinstance(model, ModelSpec):
        spec = model
    elif isinstance(model, dict):
        spec = ModelSpec(**model)
    else:
        raise ConfigError(
            f"model must be a registered model name, a spec mapping or a ModelSpec, not {model!r}"
        )
    data = suite.model_dump(mode="json")
    data["models"] = [spec.model_dump(mode="json")]
    return type(suite).parse(data, suite.name)


def assert_robust(
    model: Any,
    suite: Any,
    baseline: str | pd.DataFrame,
    *,
    store: Any = None,
    max_drop: str | float = 0.0,
    metrics: tuple[str, ...] | list[str] = ("accuracy",),
    alpha: float = 0.05,
    junit: str | Path | None = None,
) -> GateResult:
    """Run ``suite`` on ``model`` and fail (``AssertionError``) on a regression against ``baseline``.

    ``baseline``: a run id (or prefix, ``latest``) in ``store``, or the records of a baseline run
    (:meth:`Store.records`). ``store``: a :class:`~robustlab.store.Store` or a location; the
    candidate run is stored there (required with a run id). ``model`` ``None`` runs the suite as it
    is. ``junit``: also write the JUnit XML. Returns the :class:`~robustlab.gate.GateResult` when
    the gate passes. Bad input raises :class:`ConfigError` (not an assertion).
    """
    from robustlab.runner import run_suite
    from robustlab.store import Store

    drop = parse_max_drop(max_drop)
    s = _with_model(_suite(suite), model)
    if store is None:
        if isinstance(baseline, str):
            raise ConfigError("baseline is a run id: give the store that holds it (store=...)")
        import tempfile

        store = Store(Path(tempfile.mkdtemp(prefix="robustlab-gate-")) / "store.db")
    elif not isinstance(store, Store):
        store = Store(str(store))
    if isinstance(baseline, str):
        store.resolve(baseline)  # an unknown run fails before the candidate runs
    run_id = run_suite(s, store, progress=False, resume=False)
    if isinstance(baseline, str):
        res = gate_runs(store, baseline, run_id, metrics, drop, alpha=alpha)
    else:
        res = gate(baseline, store.records(run_id), metrics, drop, alpha=alpha,
                   names=("baseline", run_id))  # fmt: skip
    if junit is not None:
        res.write_junit(junit)
    if not res.passed:
        lines = [res._detail(r) for r in res.regressions.itertuples()]
        raise AssertionError(
            f"robustness regression: {len(lines)} row(s) of run {run_id} are worse than baseline "
            f"{res.baseline} beyond max_drop {drop:g} (BH FDR {alpha:g}):\n  " + "\n  ".join(lines)
        )
    return res
