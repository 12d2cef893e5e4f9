"""The domain of a probe's levels (severities, eps, radii) and the integer bounds every consumer
shares; standard library only, so the registries (and ``robustlab list``) import no torch.

Re-exported by :mod:`robustlab.core.types`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from robustlab.core.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy / scikit-learn seeds are 32-bit; torch takes them unchanged
INT64_MAX = 2**63 - 1  # the store's integers are 64-bit signed


@dataclass(frozen=True)
class Levels:
    """The domain of a probe's levels (severities, eps, radii): finite numbers in ``[lo, hi]``
    (``lo_open``/``hi_open`` exclude an end), integers only if ``integer``.

    ``what`` names the level in messages ("severity", "edit rate", "eps", "radius").

    Example::

        Levels(0, 5, what="severity").check([1, 2.5, 7], "perturbation 'fog'")  # raises for 7
    """

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    what: str = "level"

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo, hi = _num(self.lo), _num(self.hi)
        if self.lo == -math.inf and self.hi == math.inf:
            return kind
        if self.hi == math.inf:
            return f"{kind} {'>' if self.lo_open else '>='} {lo}"
        if self.lo == -math.inf:
            return f"{kind} {'<' if self.hi_open else '<='} {hi}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"{kind} in {left}{lo}, {hi}{right}"

    def contains(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if self.integer and v != int(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def check(self, levels: Sequence[Any], what: str) -> None:
        """Raise :class:`ConfigError` naming the first level outside this domain."""
        for i, v in enumerate(levels):
            if not self.contains(v):
                shown = (
                    _num(v) if isinstance(v, float | int) and not isinstance(v, bool) else repr(v)
                )
                raise ConfigError(
                    f"{what}: level {i} ({shown}) is outside its domain: the {self.what} must be "
                    f"{self.describe()}"
                )


def _num(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else f"{v:g}"


EDIT_RATE = Levels(0, 1, what="edit rate")
"""Levels of text perturbations and text/RAG attacks: the share of words edited."""
VARIANT = Levels(0, SEED_MAX, integer=True, what="variant number")
"""Levels that number variants (0 = unchanged; each number seeds one variant)."""
WORD_EDITS = Levels(0, 10_000, integer=True, what="word-edit budget")
"""Levels of ranking attacks: how many words may be edited."""
