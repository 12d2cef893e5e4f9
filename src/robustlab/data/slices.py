"""Slices: subpopulations of examples, by metadata or by any predicate over records.

Records carry each example's metadata as ``m.<column>`` (see :mod:`robustlab.core.records`), so
slices are applied to records after a run -- adding a slice never requires re-running models.

Example::

    from robustlab.data.slices import Slice, by_metadata, where, summarize_slices

    slices = [*by_metadata(df, "label"), where("heavy ink", ink=["heavy"]),
              Slice("long ids", lambda r: r["example_id"] > 1000)]
    summarize_slices(df, slices, ["accuracy"])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from robustlab.core.errors import ConfigError


@dataclass(frozen=True)
class Slice:
    """A named subpopulation: ``predicate(records) -> boolean mask``; ``group`` names its family."""

    name: str
    predicate: Callable[[pd.DataFrame], pd.Series]
    group: str = ""

    def mask(self, df: pd.DataFrame) -> pd.Series:
        return self.predicate(df).astype(bool)


def _text(s: pd.Series) -> pd.Series:
    # metadata may be stored as text ("3") while YAML gives ints (3): compare as text
    return s.astype(str)


def by_metadata(df: pd.DataFrame, column: str, name: str | None = None) -> list[Slice]:
    """One slice per value of metadata ``column`` (values in natural order: 2 before 10)."""
    col = f"m.{column}"
    if col not in df:
        raise ConfigError(f"slice by {column!r}: the records have no metadata column {column!r}")
    values = list(dict.fromkeys(_text(df[col].dropna())))
    numeric = pd.to_numeric(pd.Series(values), errors="coerce")
    order = sorted(range(len(values)), key=lambda i: (pd.isna(numeric[i]), numeric[i], values[i]))
    label = name or column
    return [
        Slice(f"{label}={values[i]}", lambda r, v=values[i]: _text(r[col]) == v, label)
        for i in order
    ]


def where(name: str, **conditions: Sequence[Any]) -> Slice:
    """Examples whose metadata column values are in the given lists (all conditions must hold)."""

    def predicate(r: pd.DataFrame) -> pd.Series:
        mask = pd.Series(True, index=r.index)
        for c, values in conditions.items():
            if f"m.{c}" not in r:
                raise ConfigError(f"slice {name!r}: the records have no metadata column {c!r}")
            mask &= _text(r[f"m.{c}"]).isin([str(v) for v in values])
        return mask

    return Slice(name, predicate, name)


def from_spec(spec: Mapping[str, Any] | Any, df: pd.DataFrame) -> list[Slice]:
    """Slices of a suite's ``SliceSpec`` (``by: col`` or ``name`` + ``where: {col: [values]}``)."""
    spec = spec if isinstance(spec, Mapping) else spec.model_dump()
    if spec.get("by"):
        return by_metadata(df, spec["by"], spec.get("name"))
    return [where(spec["name"], **(spec.get("where") or {}))]


def summarize_slices(
    df: pd.DataFrame,
    slices: Sequence[Slice],
    names: Sequence[str] = ("accuracy",),
    by: Sequence[str] = ("model", "kind", "probe", "level"),
) -> pd.DataFrame:
    """:func:`robustlab.metrics.summarize` within each slice, with ``slice`` and ``group`` columns."""
    from robustlab.metrics import summarize

    parts = []
    for s in slices:
        sub = df[s.mask(df)]
        if len(sub):
            parts.append(summarize(sub, names, by=by).assign(slice=s.name, group=s.group))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
