"""The report's tables, computed from records only (see :mod:`robustlab.core.records`).

Every function takes the expanded records of one run and returns a tidy DataFrame with one row per
group. Metric values come from the metrics registry via :func:`robustlab.metrics.summarize`
(value, 95% bootstrap CI over examples, ``n``, spread across replicates), so the report shows the
same numbers as ``robustlab.metrics``. Column names: ``<metric>``, ``<metric>_lo``/``_hi`` (CI),
``<metric>_std`` (standard deviation across replicates), ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.data.slices import from_spec
from robustlab.metrics import summarize
from robustlab.report.format import level_text

SLICE_KEYS = ["model", "slice_set", "slice", "kind", "probe", "level"]
ATTACK_METRICS = ("accuracy", "attack_success_rate", "mean_queries", "median_distance")


def stats(
    df: pd.DataFrame,
    by: Sequence[str],
    names: Sequence[str] = ("accuracy",),
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Metrics ``names`` per group ``by`` as one wide row per group.

    ``summary``: the long :func:`summarize` rows of exactly these groups (with ``names`` among
    their metrics), computed once for several tables (see :func:`summary_by_kind`); else they
    are computed here.
    """
    by = list(by)
    cols = [*by, "n"] + [f"{m}{s}" for m in names for s in ("", "_lo", "_hi", "_std")]
    if df.empty:
        return pd.DataFrame(columns=cols)
    if summary is None:
        s = summarize(df, names, by=by)
    else:
        s = summary[summary["metric"].isin(list(names))]
    fields = {"value": "", "ci_lo": "_lo", "ci_hi": "_hi", "replicate_std": "_std"}
    wide = s.set_index([*by, "metric"])[list(fields)].unstack("metric")
    wide.columns = [f"{metric}{fields[field]}" for field, metric in wide.columns]
    n = s.groupby(by, sort=False, dropna=False)["n"].first()
    out = wide.join(n).reset_index()
    return out[cols]


def summary_by_kind(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The long :func:`summarize` rows of every (model, kind, probe, level) group and metric:
    one pass over the records that the per-kind tables below then select from (a group's numbers
    do not depend on the other groups, so selecting gives what a pass over one kind gives)."""
    return summarize(df, list(dict.fromkeys(names)), by=["model", "kind", "probe", "level"])


def _of_kind(summary: pd.DataFrame | None, kind: str) -> pd.DataFrame | None:
    """The rows of ``kind`` in a :func:`summary_by_kind` table, without the ``kind`` column."""
    if summary is None:
        return None
    return summary[summary["kind"] == kind].drop(columns="kind")


def clean(df: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Clean accuracy per model (replicates pooled) with CI and spread across training seeds."""
    sub = df[df["kind"] == "clean"]
    if summary is not None and len(sub):
        # the (model, clean, probe, level) groups are the per-model groups only where each model's
        # clean records have one probe and level (as the runner writes them)
        per_model = sub.groupby("model", dropna=False)[["probe", "level"]].nunique(dropna=False)
        if (per_model.to_numpy() == 1).all():
            s = _of_kind(summary, "clean")
            return stats(sub, ["model"], summary=s.drop(columns=["probe", "level"]))
    return stats(sub, ["model"])


def clean_by_replicate(df: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy per model and replicate (training seed)."""
    out = stats(df[df["kind"] == "clean"], ["model", "replicate"])
    return out.drop(columns=["accuracy_std"])


def shifts(
    df: pd.DataFrame, kind: str, clean_acc: pd.DataFrame, summary: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Accuracy per (model, probe, level) for ``kind`` records, with ``drop`` = clean - accuracy."""
    out = stats(
        df[df["kind"] == kind], ["model", "probe", "level"], summary=_of_kind(summary, kind)
    )
    base = clean_acc.set_index("model")["accuracy"].rename("clean_accuracy")
    out = out.join(base, on="model")
    out["drop"] = out["clean_accuracy"] - out["accuracy"]
    return out


def ood_summary(shift_tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per model and kind: number of conditions, mean accuracy, mean and worst drop (and where)."""
    rows = []
    for kind, t in shift_tables.items():
        for model, g in t.groupby("model", sort=True):
            worst = g.loc[g["drop"].idxmax()]
            rows.append(
                {"model": model, "kind": kind, "conditions": len(g),
                 "mean_accuracy": g["accuracy"].mean(), "mean_drop": g["drop"].mean(),
                 "worst_drop": worst["drop"], "worst_probe": worst["probe"],
                 "worst_level": worst["level"],
                 "worst": worst["probe"] if kind == "evalset" else f"{worst['probe']}@{level_text(worst['level'])}"}
            )  # fmt: skip
    cols = ["model", "kind", "conditions", "mean_accuracy", "mean_drop", "worst_drop",
            "worst_probe", "worst_level", "worst"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def attacks(df: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Robust accuracy (CI), success rate (CI), mean queries and median distance per epsilon."""
    return stats(
        df[df["kind"] == "attack"], ["model", "probe", "level"], ATTACK_METRICS,
        summary=_of_kind(summary, "attack"),
    )  # fmt: skip


def certifiers(df: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Certified accuracy per radius, and the abstention rate where recorded."""
    sub = df[df["kind"] == "certifier"]
    out = stats(sub, ["model", "probe", "level"], summary=_of_kind(summary, "certifier"))
    if "x.abstained" in sub and not out.empty:
        ab = sub.groupby(["model", "probe", "level"])["x.abstained"].mean().rename("abstain_rate")
        out = out.join(ab, on=["model", "probe", "level"])
    return out


def worst_levels(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The (model, probe, level) with the lowest accuracy of each probe in ``tables``."""
    parts = [x for x in tables if not x.empty]
    t = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if t.empty:
        return pd.DataFrame(columns=["model", "probe", "level"])
    idx = t.groupby(["model", "probe"], sort=True)["accuracy"].idxmin()
    return t.loc[idx, ["model", "probe", "level"]].reset_index(drop=True)


def _str(s: pd.Series) -> pd.Series:
    # metadata may hold ints/bools while YAML gave strings (or the reverse): compare as text
    return s.astype("string").fillna("<missing>")


def slices(
    df: pd.DataFrame, specs: Sequence[dict[str, Any]], worst: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """Accuracy per slice, clean and at each probe's worst level; plus notes on unusable slices.

    ``by: col`` gives one slice per value of ``m.<col>``; ``where: {col: [values]}`` one named slice
    (all conditions must hold).
    """
    # what slices and their accuracy read: keys, correctness, replicate, metadata (``m.*``); not
    # the records' text columns, which cost most to copy into each slice of a large run
    keep = [c for c in df if c in ("model", "replicate", "kind", "probe", "level", "correct")
            or str(c).startswith("m.")]  # fmt: skip
    df = df[keep]
    sub = pd.concat(
        [df[df["kind"] == "clean"], df.merge(worst, on=["model", "probe", "level"])],
        ignore_index=True,
    )
    parts, notes = [], []
    # the slices' values are found in the distinct metadata rows (first-seen order kept), their
    # masks taken on the records
    meta = sub[[c for c in sub if str(c).startswith("m.")]].drop_duplicates()
    for spec in specs:
        try:  # one concept, one place: slice expansion lives in robustlab.data.slices
            for sl in from_spec(spec, meta):
                part = sub[sl.mask(sub).to_numpy()]
                if len(part):
                    parts.append(part.assign(slice_set=sl.group, slice=sl.name))
        except ConfigError as e:
            notes.append(str(e))
    if not parts:
        return stats(sub.iloc[:0], SLICE_KEYS).assign(condition=pd.Series(dtype=str)), notes
    table = stats(pd.concat(parts), SLICE_KEYS)
    plain = table["kind"].isin(["clean", "evalset"])
    table["condition"] = table["probe"].where(
        plain, table["probe"] + "@" + table["level"].map(level_text)
    )
    # slice sets in suite order, values in natural order (label=2 before label=10)
    sets = {p["slice_set"].iloc[0]: i for i, p in enumerate(parts) if len(p)}
    value = table["slice"].str.partition("=")[2]
    numeric = pd.to_numeric(value, errors="coerce")
    table = table.assign(
        _s=table["slice_set"].map(sets), _k=numeric.isna(), _n=numeric, _p=table["probe"] != "clean"
    )
    table = table.sort_values(["_s", "_k", "_n", "slice", "_p"], kind="stable")
    return table.drop(columns=["_s", "_k", "_n", "_p"]).reset_index(drop=True), notes


def metric_table(
    df: pd.DataFrame, names: Sequence[str], summary: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every metric the suite asks for, per (model, kind, probe, level)."""
    return stats(df, ["model", "kind", "probe", "level"], list(dict.fromkeys(names)), summary)


def failing(df: pd.DataFrame, top: int = 10) -> tuple[int, pd.DataFrame]:
    """Number of records whose example failed (``error`` set) and the most common errors."""
    err = df["error"].dropna() if "error" in df else pd.Series(dtype=object)
    counts = err.str.slice(0, 300).value_counts().head(top)
    return int(len(err)), counts.rename_axis("error").reset_index(name="count")
