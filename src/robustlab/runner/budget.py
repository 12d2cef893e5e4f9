"""Run budgets: ``robustlab run --budget 30s|5m|1h|1000 units`` stops a run cleanly.

A budget is checked **between units**: when it is reached the runner starts no further unit,
stores every finished one (the unit in progress when a time budget runs out is finished and
stored, never abandoned: a time budget can overrun by one unit's time), and marks the run
``interrupted`` with a message saying which budget stopped it. ``robustlab run`` on the same suite
then resumes it with exactly the missing units (a budget applies to each invocation anew). The
clock starts when the run starts (model loading and validation included) and at least one unit
runs per invocation, so a series of budgeted invocations always finishes a suite.

Example::

    Budget.parse("5m")          # Budget(seconds=300.0, units=None)
    Budget.parse("1000 units")  # Budget(seconds=None, units=1000)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from robustlab.core.errors import ConfigError

_TIME = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """A limit on wall seconds or on units executed by one invocation (either or both)."""

    seconds: float | None = None
    units: int | None = None

    @staticmethod
    def parse(text: str) -> Budget:
        """``30s``, ``5m``, ``1.5h``, ``90`` (seconds), ``1000 units`` / ``1000u``."""
        m = _PATTERN.match(text.lower())
        hint = "use e.g. 30s, 5m, 1h or '1000 units'"
        if m is None:
            raise ConfigError(f"bad --budget {text!r}: {hint}")
        value, unit = float(m.group(1)), m.group(2) or "s"
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"bad --budget {text!r}: it must be positive")
        if unit in ("u", "unit", "units"):
            if value != int(value):
                raise ConfigError(f"bad --budget {text!r}: a number of units is a whole number")
            return Budget(units=int(value))
        if unit not in _TIME:
            raise ConfigError(f"bad --budget {text!r}: unknown unit {unit!r}; {hint}")
        return Budget(seconds=value * _TIME[unit])

    def reached(self, units_done: int, elapsed: float) -> str | None:
        """Why the budget is spent after ``units_done`` units and ``elapsed`` seconds, or None."""
        if self.units is not None and units_done >= self.units:
            return f"{units_done} units"
        if self.seconds is not None and elapsed >= self.seconds:
            return f"{elapsed:.1f} s of {self.seconds:g} s"
        return None

    def __str__(self) -> str:
        parts = ([f"{self.seconds:g} s"] if self.seconds is not None else []) + (
            [f"{self.units} units"] if self.units is not None else []
        )
        return " / ".join(parts)
