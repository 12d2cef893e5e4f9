"""pytest plugin: the ``robust_gate`` fixture (opt in from a ``conftest.py``)::

    pytest_plugins = ["robustlab.testing.pytest_plugin"]

    def test_candidate(robust_gate, baseline_records):
        robust_gate("digits-cnn", "my-suite.yaml", baseline=baseline_records, max_drop="2pp")

``robust_gate`` is :func:`robustlab.testing.gate.assert_robust` with ``store`` defaulting to a
fresh store in the test's ``tmp_path`` (pass ``store=`` to gate against a run id in yours).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def robust_gate(tmp_path: Path) -> Callable[..., Any]:
    """``assert_robust`` bound to a store under ``tmp_path`` (see the module docstring)."""
    from robustlab.testing.gate import assert_robust

    def check(model: Any, suite: Any, baseline: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("store", tmp_path / "robustlab-gate.db")
        return assert_robust(model, suite, baseline, **kwargs)

    return check
