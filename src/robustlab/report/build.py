"""Build a run's report content (JSON-able) from its stored records, and write HTML + JSON.

The content follows the taxonomy of "Are Neural Ranking Models Robust?" (i.i.d. variance,
out-of-distribution generalisation, adversarial robustness) for the top-level summary, then the four
paradigms of Robustness Gym (Goel et al., 2021): subpopulations (slices), transformations,
evaluation sets and attacks. Everything is computed from records, never from live objects.

Example::

    from robustlab.report import write_report
    from robustlab.store import Store

    html_path, json_path = write_report(Store("runs.db"), "latest-run-id", "reports/")
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustlab.core.errors import ConfigError
from robustlab.core.records import without_diagnoses
from robustlab.report import tables
from robustlab.report.format import level_text
from robustlab.report.leaderboard import leaderboard
from robustlab.report.levels import NORMS, Axis, axis_for, probe_axes
from robustlab.runner.suite import Suite
from robustlab.store import Store

REPORT_VERSION = 1
ADV_COLUMNS = ["model", "probe", "level", "accuracy", "accuracy_lo", "accuracy_hi",
               "attack_success_rate", "mean_queries", "axis", "level_name", "norm"]  # fmt: skip
CERT_COLUMNS = ["model", "probe", "level", "accuracy", "accuracy_lo", "accuracy_hi", "n",
                "axis", "level_name", "norm"]  # fmt: skip


def _rows(
    df: pd.DataFrame, models: list[str] | None = None, probes: list[str] | None = None
) -> list[dict[str, Any]]:
    """Records of ``df``, stably ordered by suite model order (then suite probe order)."""
    keys = [(c, order) for c, order in (("model", models), ("probe", probes)) if order and c in df]
    if len(df) and keys:
        ranks = pd.DataFrame({c: df[c].map({v: i for i, v in enumerate(o)}) for c, o in keys})
        df = df.iloc[np.lexsort([ranks[c].fillna(len(o)).to_numpy() for c, o in reversed(keys)])]
    return [_clean_json(r) for r in df.to_dict(orient="records")]


def _probe_order(suite: dict[str, Any], df: pd.DataFrame) -> list[str]:
    """Probe labels in suite order (``clean`` first), then any others found in the records."""
    try:
        order = ["clean", *(p.display for p in Suite.parse(suite).probes)]
    except ConfigError:
        order = ["clean"]
    return order + sorted(set(df["probe"].dropna().unique()) - set(order)) if len(df) else order


def _clean_json(value: Any) -> Any:
    """Plain JSON values: NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _header(info: dict[str, Any], df: pd.DataFrame) -> dict[str, Any]:
    units = info.get("units", [])
    failed = [
        {"unit": u["description"], "error": u.get("error")}
        for u in units
        if u.get("status") == "failed"
    ]
    n_failing, errors = tables.failing(df)
    suite = info.get("suite", {})
    return {
        "id": info["id"],
        "suite": info.get("suite_name") or suite.get("name"),
        "status": info.get("status"),
        "message": info.get("message"),
        "seed": info.get("seed"),
        "created_at": info.get("created_at"),
        "finished_at": info.get("finished_at"),
        "elapsed": info.get("elapsed"),
        "environment": info.get("environment", {}),
        "fingerprints": info.get("fingerprints", {}),
        "n_units": info.get("n_units"),
        "units_done": sum(u.get("status") == "done" for u in units),
        "failed_units": failed,
        "n_records": int(len(df)),
        "n_failing_examples": n_failing,
        "errors": _rows(errors),
        "suite_config": suite,
    }


def _model_summary(
    models: list[str],
    clean: pd.DataFrame,
    ood: pd.DataFrame,
    attacks: pd.DataFrame,
    certified: pd.DataFrame,
    df: pd.DataFrame,
) -> pd.DataFrame:
    """The compact per-model table: one row per model across the three S1 families, and the
    lowest certified accuracy (the largest radius) where the run has certifiers."""
    rows = []
    # per model in one pass over the records (not one filtered copy of them per model)
    n_reps = df.groupby("model")["replicate"].nunique() if len(df) else pd.Series(dtype=int)
    n_failing = df["error"].notna().groupby(df["model"]).sum() if len(df) else n_reps
    for model in models:
        c = clean[clean["model"] == model]
        o = ood[ood["model"] == model]
        a = attacks[attacks["model"] == model]
        k = certified[certified["model"] == model]
        row: dict[str, Any] = {
            "model": model,
            "replicates": int(n_reps.get(model, 0)),
            "clean_accuracy": c["accuracy"].iloc[0] if len(c) else None,
            "clean_lo": c["accuracy_lo"].iloc[0] if len(c) else None,
            "clean_hi": c["accuracy_hi"].iloc[0] if len(c) else None,
            "seed_std": c["accuracy_std"].iloc[0] if len(c) else None,
            "ood_mean_drop": None,
            "ood_worst_drop": None,
            "ood_worst": None,
            "adv_worst_accuracy": None,
            "adv_worst": None,
            "cert_worst_accuracy": None,
            "cert_worst": None,
            "failing_examples": int(n_failing.get(model, 0)),
        }
        if len(o):
            w = o.loc[o["worst_drop"].idxmax()]
            # mean over every OOD condition (perturbation levels and evaluation sets)
            row["ood_mean_drop"] = float(
                (o["mean_drop"] * o["conditions"]).sum() / o["conditions"].sum()
            )
            row["ood_worst_drop"] = w["worst_drop"]
            row["ood_worst"] = w["worst"]
        if len(a):
            w = a.loc[a["accuracy"].idxmin()]
            row["adv_worst_accuracy"] = w["accuracy"]
            row["adv_worst"] = _condition(w)
        if len(k):
            w = k.loc[k["accuracy"].idxmin()]
            row["cert_worst_accuracy"] = w["accuracy"]
            row["cert_worst"] = _condition(w)
        rows.append(row)
    return pd.DataFrame(rows)


def _condition(row: Any) -> str:
    """``probe@level``, with the norm of an Lp level: ``pgd@8/255 L∞``, ``patch@0.1``."""
    norm = NORMS.get(row["norm"]) if isinstance(row.get("norm"), str) else None
    return f"{row['probe']}@{level_text(row['level'])}" + (f" {norm}" if norm else "")


def _with_axes(t: pd.DataFrame, axes: dict[str, Axis], kind: str | None = None) -> pd.DataFrame:
    """``t`` with the meaning of its levels: ``axis`` (label), ``level_name`` and ``norm``."""
    kinds = t["kind"] if "kind" in t else pd.Series(kind, index=t.index)
    found = [axis_for(axes, str(k), str(p)) for k, p in zip(kinds, t["probe"], strict=True)]
    return t.assign(
        axis=[a.label for a in found],
        level_name=[a.name for a in found],
        norm=[a.norm for a in found],
    )


def build_report(store: Store, run_id: str) -> dict[str, Any]:
    """The report of run ``run_id`` as plain JSON-able data (no NaN: missing values are None).

    Keys: ``run`` (header: suite, status, seed, environment, fingerprints, failures), ``summary``
    (per-model table, ``iid``, ``replicates``, ``ood``, ``adversarial``) and ``sections``
    (``slices``, ``transformations``, ``evaluation_sets``, ``attacks``, ``certifiers``,
    ``metrics``), each a dict with ``rows`` (list of dicts) and, where relevant, ``notes``.
    """
    info = store.run_info(run_id)
    df = store.records(run_id)
    suite = info.get("suite", {})
    models = [m.get("label") or m["name"] for m in suite.get("models", [])]
    models += sorted(set(df["model"].dropna().unique()) - set(models)) if len(df) else []

    metric_names = ["accuracy", *suite.get("metrics", [])]
    full, df = df, without_diagnoses(df)  # diagnoses: their own sections (extensions) only
    # every per-kind table below selects its groups from one summary pass over the records
    summary = (
        tables.summary_by_kind(df, [*metric_names, *tables.ATTACK_METRICS]) if len(df) else None
    )
    clean = tables.clean(df, summary)
    reps = tables.clean_by_replicate(df)
    axes = probe_axes(info)
    pert = _with_axes(tables.shifts(df, "perturbation", clean, summary), axes, "perturbation")
    evalsets = tables.shifts(df, "evalset", clean, summary)
    ood = tables.ood_summary(
        {k: t for k, t in (("perturbation", pert), ("evalset", evalsets)) if len(t)}
    )
    atk = _with_axes(tables.attacks(df, summary), axes, "attack")
    cert = _with_axes(tables.certifiers(df, summary), axes, "certifier")
    worst = tables.worst_levels([pert, evalsets, atk])
    slices, notes = tables.slices(df, suite.get("slices", []), worst)
    probes = _probe_order(suite, full)

    return _clean_json(
        {
            "report_version": REPORT_VERSION,
            "run": _header(info, full),
            "models": models,
            "probes": probes,
            "summary": {
                "models": _rows(_model_summary(models, clean, ood, atk, cert, full)),
                "iid": _rows(clean, models),
                "replicates": _rows(reps, models),
                "ood": _rows(ood, models, probes),
                "adversarial": _rows(atk[ADV_COLUMNS], models, probes),
                "certified": _rows(cert[CERT_COLUMNS], models, probes),
                # two or more models: ranked by clean, worst OOD and worst adversarial accuracy
                "leaderboard": leaderboard(
                    models, clean, {"perturbation": pert, "evalset": evalsets}, atk
                ),
            },
            "sections": {
                "slices": {
                    "rows": _rows(slices, models),
                    "worst_levels": _rows(worst, models, probes),
                    "notes": notes,
                    "specs": suite.get("slices", []),
                },
                "transformations": {"rows": _rows(pert, models, probes)},
                "evaluation_sets": {"rows": _rows(evalsets, models, probes)},
                "attacks": {"rows": _rows(atk, models, probes)},
                "certifiers": {"rows": _rows(cert, models, probes)},
                "metrics": {
                    "rows": _rows(
                        _with_axes(tables.metric_table(df, metric_names, summary), axes),
                        models,
                        probes,
                    )
                },
            },
            "extensions": _extensions(full, info),
        }
    )


def _extensions(df: pd.DataFrame, info: dict[str, Any]) -> dict[str, Any]:
    """Data of the registered domain sections that apply to this run (see ``report.sections``)."""
    from robustlab.core.registry import report_sections

    out = {}
    for key, section in report_sections.items():
        data = section().build(df, info) if isinstance(section, type) else section.build(df, info)
        if data is not None:
            out[key] = {"title": section.title, "data": data}
    return out


def write_report(
    store: Store, run_id: str, out_dir: str | Path, compare_with: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<run_id>.html`` (self-contained) and ``<out_dir>/<run_id>.json``.

    With ``compare_with`` (runs to compare, the first the baseline: ``[A, B]`` for the report of B
    against A), the report is that of ``run_id`` plus a ``comparison`` section
    (:mod:`robustlab.report.comparison`) and the files are named ``<A>-vs-<B>...``. Returns the
    two paths (HTML, JSON). The JSON is strict (``allow_nan=False``).
    """
    from robustlab.report.html import render
    from robustlab.store.location import writable_folder, write_private

    content = build_report(store, run_id)
    name = run_id
    if compare_with:
        from robustlab.report.comparison import comparison

        content["comparison"] = _clean_json(comparison(store, compare_with))
        name = "-vs-".join(content["comparison"]["runs"])
    out = writable_folder(out_dir, "report folder")  # created 0700 if missing
    html_path, json_path = out / f"{name}.html", out / f"{name}.json"
    # the report holds examples and failures: readable by its owner only, like the store
    write_private(json_path, json.dumps(content, indent=1, allow_nan=False) + "\n")
    write_private(html_path, render(content))
    return html_path, json_path
