"""Metrics as pure functions of records (see :mod:`robustlab.core.records`)."""

from robustlab.metrics import core  # noqa: F401
from robustlab.metrics.base import Metric, bootstrap_ci, paired_bootstrap_diff
from robustlab.metrics.summary import compare, summarize

__all__ = ["Metric", "bootstrap_ci", "compare", "paired_bootstrap_diff", "summarize"]
