"""Leaderboard of a run's models: ranked by clean accuracy, worst-case OOD accuracy and worst
adversarial accuracy (the three families of "Are Neural Ranking Models Robust?": i.i.d.,
out-of-distribution, adversarial; worst-case metrics as in ReCode's Robust@k).

Each criterion is ranked with competition ("min") ranking: higher accuracy is better, equal values
share the best rank of their group (1, 1, 3) and a model with no value for a criterion ranks last on
it. A criterion no model has (a run without attacks) is left out. The overall order is by mean rank
over the criteria present; a tie in mean rank is broken by the clean rank, then by suite order, and
tied models share the same overall rank (min ranking again).

Example::

    from robustlab.report.leaderboard import leaderboard

    rows = leaderboard(["a", "b"], clean, {"perturbation": pert, "evalset": sets}, attacks)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from robustlab.report.format import e, num, pct, table

CRITERIA = (
    ("clean_accuracy", "clean accuracy"),
    ("ood_worst_accuracy", "worst-case OOD accuracy"),
    ("adv_worst_accuracy", "worst adversarial accuracy"),
)


def _min_rank(values: np.ndarray) -> np.ndarray:
    """Competition ranks of ``values`` (higher is better; ties share the best rank; NaN last)."""
    v = np.where(np.isnan(values), -np.inf, values)
    # rank = 1 + number of strictly better values; NaN (-inf) all share the last rank
    ranks = 1 + (v[None, :] > v[:, None]).sum(axis=1)
    return np.where(np.isnan(values), len(values), ranks)


def _worst(t: pd.DataFrame, models: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
    """Per model: the lowest accuracy in ``t`` and where (``probe@level``), NaN/None if none."""
    from robustlab.report.format import level_text

    vals, where = [], []
    for m in models:
        g = t[t["model"] == m] if len(t) else t
        g = g[g["accuracy"].notna()] if len(g) else g
        if not len(g):
            vals.append(np.nan)
            where.append(None)
            continue
        w = g.loc[g["accuracy"].astype(float).idxmin()]
        vals.append(float(w["accuracy"]))
        lvl = "" if w.get("kind") == "evalset" else f"@{level_text(w['level'])}"
        where.append(f"{w['probe']}{lvl}")
    return np.asarray(vals, dtype=float), where


def leaderboard(
    models: Sequence[str],
    clean: pd.DataFrame,
    shifts: dict[str, pd.DataFrame],
    attacks: pd.DataFrame,
) -> list[dict[str, Any]]:
    """Rows of the leaderboard (best first) for a run with two or more models, else ``[]``.

    ``clean``: :func:`robustlab.report.tables.clean` (``model``, ``accuracy``); ``shifts``: kind
    (``perturbation``, ``evalset``) -> its table (:func:`tables.shifts`), ``attacks``:
    :func:`tables.attacks`. Each row: ``rank``, ``model``, per criterion the value, its
    ``<criterion>_rank`` and, for worst cases, ``<criterion>_at``, and ``mean_rank``.
    """
    models = list(models)
    if len(models) < 2:
        return []
    by_model = clean.set_index("model")["accuracy"] if len(clean) else pd.Series(dtype=float)
    cl = np.asarray([float(by_model.get(m, np.nan)) for m in models], dtype=float)
    parts = [t.assign(kind=kind) for kind, t in shifts.items() if len(t)]
    ood = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    values = {"clean_accuracy": (cl, [None] * len(models)),
              "ood_worst_accuracy": _worst(ood, models),
              "adv_worst_accuracy": _worst(attacks, models)}  # fmt: skip
    present = [k for k, _ in CRITERIA if not np.isnan(values[k][0]).all()]
    if not present:
        return []
    ranks = {k: _min_rank(values[k][0]) for k in present}
    mean_rank = np.mean([ranks[k] for k in present], axis=0)
    clean_rank = ranks.get("clean_accuracy", np.zeros(len(models)))
    order = np.lexsort((np.arange(len(models)), clean_rank, mean_rank))
    # overall rank: models equal on (mean rank, clean rank) share the best rank of their group
    key = np.stack([mean_rank, clean_rank], axis=1)
    better = (key[None, :, 0] < key[:, None, 0]) | (
        (key[None, :, 0] == key[:, None, 0]) & (key[None, :, 1] < key[:, None, 1])
    )
    overall = 1 + better.sum(axis=1)
    rows = []
    for i in order:
        row: dict[str, Any] = {"rank": int(overall[i]), "model": models[i],
                               "mean_rank": float(mean_rank[i])}  # fmt: skip
        for k in present:
            v, at = values[k]
            row[k] = None if np.isnan(v[i]) else float(v[i])
            row[f"{k}_rank"] = int(ranks[k][i])
            if k != "clean_accuracy":
                row[f"{k}_at"] = at[i]
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as an HTML table with a note on how ranks and ties are computed."""
    present = [(k, t) for k, t in CRITERIA if k in rows[0]]
    head = ["rank", "model", *(f"{t} (rank)" for _, t in present), "mean rank"]
    body = []
    for r in rows:
        cells = [str(r["rank"]), e(r["model"])]
        for k, _ in present:
            at = r.get(f"{k}_at")
            where = f" <span class=ci>{e(at)}</span>" if at else ""
            cells.append(f"{pct(r[k])}{where} ({r[f'{k}_rank']})")
        cells.append(num(r["mean_rank"], 2))
        body.append(cells)
    note = (
        '<p class="muted">Each criterion is ranked separately (higher accuracy is better); equal '
        "values share the best rank (1, 1, 3) and a missing value ranks last. Models are ordered "
        "by their mean rank, ties broken by the clean rank; models still tied share a rank. "
        "Worst cases are the lowest accuracy over every perturbation level and evaluation set "
        "(OOD) or attack budget (adversarial), shown next to the value.</p>"
    )
    return note + table(head, body, num_cols=[0, *range(2, len(head))])
