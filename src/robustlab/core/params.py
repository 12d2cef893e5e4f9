"""Parameter domains for component signatures (``Annotated`` pydantic constraints, checked by
:func:`robustlab.core.registry.check_params`) and norm names; no torch.

A component declares its parameters' domains once, in its signature, and the domain of its probe
levels once, with its registration (``@perturbations.register("x", levels=Levels(0, 5))``, see
:mod:`robustlab.core.levels`). Re-exported by :mod:`robustlab.core.types`.

Example::

    def __init__(self, steps: PositiveInt = 10, rate: Rate = 0.1, norm: Norm = "inf"): ...
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from robustlab.core.errors import ConfigError
from robustlab.core.levels import SEED_MAX

NormName = Literal["inf", "2", "1"]


def parse_norm(norm: str | float | int) -> str:
    """Normalise a norm name: ``inf``/``linf``/``float('inf')`` -> ``"inf"``, ``2``/``l2`` -> ``"2"``."""
    s = str(norm).lower().removeprefix("l")
    if s in ("inf", "infinity", "oo"):
        return "inf"
    if s in ("2", "2.0"):
        return "2"
    if s in ("1", "1.0"):
        return "1"
    raise ConfigError(f"unknown norm {norm!r}; use 'inf', '2' or '1'")


Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
"""A random seed that every consumer accepts (numpy's and scikit-learn's are 32-bit)."""
Rate = Annotated[float, Field(ge=0, le=1)]
"""A fraction or probability in [0, 1]."""
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Norm = Annotated[str, BeforeValidator(lambda v: parse_norm(v) if isinstance(v, str | int | float) and not isinstance(v, bool) else v)]  # fmt: skip
"""A norm name as :func:`parse_norm` reads it: ``2``, ``"l2"``, ``.inf``, ``"linf"`` ..."""
Finite = Annotated[float, Field(allow_inf_nan=False)]
AllowNonFinite = Annotated[float, Field(allow_inf_nan=True)]
"""Opt-in for a float parameter where ``inf`` means something (non-finite floats are refused by
default everywhere else)."""
Fraction = Annotated[float, Field(gt=0, lt=1)]
"""A proper fraction in (0, 1): a split share, a significance level."""
