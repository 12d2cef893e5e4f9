"""Suites, plans, engines and the runner."""

from robustlab.runner.engines import LocalEngine, RayEngine, make_engine
from robustlab.runner.plan import WorkUnit, plan
from robustlab.runner.runner import run_suite
from robustlab.runner.suite import ComponentSpec, ModelSpec, ProbeSpec, SliceSpec, Suite

__all__ = [
    "ComponentSpec",
    "LocalEngine",
    "ModelSpec",
    "ProbeSpec",
    "RayEngine",
    "SliceSpec",
    "Suite",
    "WorkUnit",
    "make_engine",
    "plan",
    "run_suite",
]
