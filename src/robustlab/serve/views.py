"""The dashboard's data: runs, a run's records and report, comparisons, a suite over time.

Everything is read from the store; expensive results (records, a report, a suite's history) are
kept in memory keyed by the digest of the runs' units
(:func:`robustlab.store.summary_cache.units_digest`), so a run that gains or re-runs a unit is
recomputed and an unchanged one is not.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from robustlab.core.errors import ConfigError, StoreError
from robustlab.core.records import without_diagnoses
from robustlab.report.sections.ensemble_breakdown import outcomes
from robustlab.store import schema
from robustlab.store.summary_cache import units_digest

T = TypeVar("T")
EXAMPLES_SHOWN = 500  # records listed on a drill-down page (the rest are counted)
REGENERATED = 6  # records shown with their perturbed inputs on a drill-down page (?show=)
REGENERATED_MAX = 24
_REGENERATING = threading.Lock()


ENSEMBLE_OUTCOMES = ("clean_wrong", "robust", "failed")  # member= values besides an index


@dataclass(frozen=True)
class Filters:
    """Drill-down filters beyond (model, probe, level): a slice of the suite (``slice``: its set
    -- the ``by`` column or its ``name`` --, ``value``: the value of a ``by`` slice) and an
    attack ensemble's outcome (``member``: ``k``, the records member ``k`` broke, or one of
    :data:`ENSEMBLE_OUTCOMES`), as the ensemble-breakdown section counts them."""

    slice: str | None = None
    value: str | None = None
    member: str | None = None

    def text(self) -> str:
        parts = [] if self.slice is None else [f"slice {self.name()!r}"]
        m = self.member
        parts += [] if m is None else [f"member {m}" if m.isdigit() else m]
        return " and ".join(parts)

    def name(self) -> str:
        return str(self.slice) if self.value is None else f"{self.slice}={self.value}"

    def apply(self, g: pd.DataFrame, slices: list[Any]) -> pd.DataFrame:
        """``g``'s records in the slice (masked as the report's slice table masks them) and of
        the ensemble outcome; an unknown slice or member is a :class:`ConfigError`."""
        if self.value is not None and self.slice is None:
            raise ConfigError("value= needs slice= (the slice's column or name)")
        if self.slice is not None:
            hit = [s for s in slices if s.group == self.slice and s.name == self.name()]
            if not hit:
                known = ", ".join(s.name for s in slices) or "none"
                raise ConfigError(f"no slice {self.name()!r} in this run (slices: {known})")
            g = g[hit[0].mask(g).to_numpy()]
        if self.member is not None:
            g = g[ensemble_outcome(g, self.member)]
        return g


def ensemble_outcome(g: pd.DataFrame, member: str) -> pd.Series:
    """Mask of ``g``'s records with ensemble outcome ``member`` (an index ``k``: broken by member
    ``k``; ``clean_wrong``, ``robust``, ``failed``), defined as
    :func:`robustlab.report.sections.ensemble_breakdown.breakdown` counts them."""
    if "x.member" not in g or g["x.member"].isna().all() or "x.success" not in g:
        raise ConfigError(
            "member=: this group's records have no ensemble member (x.member: only an attack "
            "ensemble such as autoattack records one)"
        )
    if member not in ENSEMBLE_OUTCOMES and not member.isdigit():
        raise ConfigError(
            f"member={member!r}: a member index (0, 1, ...) or one of {', '.join(ENSEMBLE_OUTCOMES)}"
        )
    o = outcomes(g)
    if member in ENSEMBLE_OUTCOMES:
        return o[member]
    return o["broken"] & (o["member"] == int(member))


class Views:
    """Read-only queries of one store for the dashboard, with a small in-memory cache."""

    def __init__(self, store: Any, cache_size: int = 32) -> None:
        self.store = store
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def _cached(self, key: tuple[Any, ...], make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return value

    # runs ----------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, with its model labels (from the suite JSON)."""
        rows = self.store.runs().to_dict("records")
        r = schema.runs.c
        with self.store.engine.connect() as c:
            suites = dict(c.execute(sa.select(r.id, r.suite)).all())
        for row in rows:
            try:
                ms = json.loads(suites.get(row["id"]) or "{}").get("models", [])
                row["models"] = [m.get("label") or m.get("name") for m in ms]
            except (ValueError, AttributeError):
                row["models"] = []
        return rows

    def info(self, run_id: str) -> dict[str, Any]:
        return self.store.run_info(self.store.resolve(run_id))

    def records(self, info: dict[str, Any]) -> pd.DataFrame:
        key = ("records", info["id"], units_digest(info["units"]))
        return self._cached(key, lambda: self.store.records(info["id"]))

    def report_html(self, info: dict[str, Any]) -> str:
        """The run's report page (built on request; cached while its units are unchanged)."""
        from robustlab.report import build_report
        from robustlab.report.html import render

        key = ("report", info["id"], units_digest(info["units"]))
        return self._cached(key, lambda: render(build_report(self.store, info["id"])))

    # drill-down ------------------------------------------------------------------------------
    def groups(self, info: dict[str, Any], metric: str = "accuracy") -> pd.DataFrame:
        """``metric`` with 95 % bootstrap CI per (model, kind, probe, level) of the run (diagnosis
        records left out: their scores are not accuracies)."""
        from robustlab.metrics import summarize

        def make() -> pd.DataFrame:
            df = without_diagnoses(self.records(info))
            if df.empty:
                return pd.DataFrame()
            return summarize(df, [metric], by=("model", "kind", "probe", "level"), n_boot=500)

        return self._cached(("groups", info["id"], units_digest(info["units"]), metric), make)

    def slices(self, info: dict[str, Any]) -> list[tuple[str, str, str | None]]:
        """The suite's slices as the report expands them (:func:`robustlab.data.slices.from_spec`
        over the records' metadata): (name, slice set, value; None for a ``where`` slice)."""

        def make() -> list[tuple[str, str, str | None]]:
            out: list[tuple[str, str, str | None]] = []
            for sl in self._slice_objects(info):
                value = sl.name[len(sl.group) + 1 :] if sl.name != sl.group else None
                out.append((sl.name, sl.group, value))
            return out

        return self._cached(("slices", info["id"], units_digest(info["units"])), make)

    def _slice_objects(self, info: dict[str, Any]) -> list[Any]:
        from robustlab.data.slices import from_spec

        def make() -> list[Any]:
            df = self.records(info)
            meta = df[[c for c in df if str(c).startswith("m.")]].drop_duplicates()
            out = []
            for spec in (info.get("suite") or {}).get("slices") or []:
                try:
                    out += from_spec(spec, meta)
                except ConfigError:  # the report notes an unusable slice; it has no examples
                    continue
            return out

        return self._cached(("slice objects", info["id"], units_digest(info["units"])), make)

    def examples(
        self,
        info: dict[str, Any],
        model: str,
        probe: str,
        level: float | None,
        where: Filters | None = None,
    ) -> tuple[pd.DataFrame, int]:
        """The records of one group (``level`` None: every level of the probe), narrowed by
        ``where`` (a slice, an ensemble member), wrong (and failed) first, then by replicate and
        example id; at most :data:`EXAMPLES_SHOWN` of them, and how many there are."""
        df = self.records(info)
        if df.empty:
            raise StoreError(f"run {info['id']} has no records")
        sel = (df["model"] == model) & (df["probe"] == probe)
        if level is not None:
            sel &= np.isclose(df["level"].astype(float), float(level), rtol=1e-9, atol=1e-12)
        g = df[sel]
        at = "" if level is None else f", level {level:g}"
        if g.empty:
            raise ConfigError(
                f"run {info['id']} has no records for model {model!r}, probe {probe!r}{at}"
            )
        if where is not None:
            g = where.apply(g, self._slice_objects(info) if where.slice is not None else [])
            if g.empty:
                raise ConfigError(
                    f"run {info['id']} has no records for model {model!r}, probe {probe!r}{at}"
                    f" in {where.text()}"
                )
        from robustlab.report.examples import order

        return order(g).head(EXAMPLES_SHOWN), len(g)

    def regenerated(
        self, info: dict[str, Any], rows: pd.DataFrame
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Views (:func:`robustlab.report.examples.view`) of records ``rows`` with their inputs
        regenerated, and notes on what could not be; cached while the run's units are unchanged,
        one regeneration at a time (models and data are shared through the process context)."""
        from robustlab.report import examples as ex

        keys = tuple(map(tuple, rows[["model", "replicate", "probe", "level", "example_id"]]
                         .itertuples(index=False, name=None)))  # fmt: skip
        key = ("regenerated", info["id"], units_digest(info["units"]), keys)

        def make() -> tuple[list[dict[str, Any]], list[str]]:
            with _REGENERATING:
                shown, notes = ex.regenerate(info, rows)
            return [ex.view(x) for x in shown], notes

        return self._cached(key, make)

    # comparisons -----------------------------------------------------------------------------
    def compare(
        self, a: dict[str, Any], b: dict[str, Any], metric: str = "accuracy"
    ) -> pd.DataFrame:
        """``metrics.compare`` of two runs' ``metric`` (B - A), diagnoses left out."""
        from robustlab.metrics import compare

        def make() -> pd.DataFrame:
            ra, rb = without_diagnoses(self.records(a)), without_diagnoses(self.records(b))
            return compare(ra, rb, [metric])

        key = ("compare", a["id"], units_digest(a["units"]), b["id"], units_digest(b["units"]),
               metric)  # fmt: skip
        return self._cached(key, make)

    def history(self, suite: str, metric: str = "accuracy") -> dict[str, Any]:
        """The S32 view of one suite: its runs by date, each probe's ``metric`` [95 % CI] per run,
        and the regressions ``compare`` flags between each run and the one before it."""
        runs = [r for r in self.runs() if r["suite_name"] == suite]
        if not runs:
            raise ConfigError(f"no runs of suite {suite!r} in {self.store.url}")
        runs.sort(key=lambda r: r["created_at"])
        infos = [self.store.run_info(r["id"]) for r in runs]
        key = ("history", suite, metric, *((i["id"], units_digest(i["units"])) for i in infos))
        return self._cached(key, lambda: _history(self, infos, metric))


def check_metric(metric: str) -> str:
    """``metric`` if it is a registered metric, else the registry's one-line error."""
    from robustlab.core.registry import metrics

    metrics.get(metric)
    return metric


def _history(views: Views, infos: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """See :meth:`Views.history`. One model per run (model versions under any label): rows are
    (kind, probe, level); several models: rows are (model, kind, probe, level)."""
    per_run = [views.groups(i, metric) for i in infos]
    models = [set(g["model"]) if len(g) else set() for g in per_run]
    by_model = any(len(m) > 1 for m in models)
    keys = ["model", "kind", "probe", "level"] if by_model else ["kind", "probe", "level"]
    cells: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for info, g in zip(infos, per_run, strict=True):
        for r in g.to_dict("records"):
            k = tuple(r[c] for c in keys)
            cells.setdefault(k, {})[info["id"]] = {
                "value": r["value"], "lo": r["ci_lo"], "hi": r["ci_hi"], "n": r["n"],
                "model": r["model"],
            }  # fmt: skip
    notes: list[str] = []
    for prev, cur in zip(infos, infos[1:], strict=False):
        try:
            cmp = views.compare(prev, cur, metric)
        except ConfigError as e:
            notes.append(f"{prev['id']} -> {cur['id']}: not compared ({e})")
            continue
        if cmp.empty:
            continue
        ok = cmp[cmp["status"] == "ok"]
        for r in ok.to_dict("records"):
            k = tuple(r[c] for c in keys)
            cell = cells.get(k, {}).get(cur["id"])
            if cell is None:
                continue
            cell["diff"], cell["q"] = r["diff"], r["q_value"]
            worse = (r["diff"] > 0) != r["higher_is_better"]
            cell["regression"] = bool(r["significant"] and worse)
            cell["improvement"] = bool(r["significant"] and not worse)
    order = {"clean": 0, "evalset": 1, "perturbation": 2, "attack": 3, "certifier": 4}
    rows = sorted(cells, key=lambda k: tuple(order.get(x, 9) if x in order else x for x in k))
    h = {"infos": infos, "keys": keys, "rows": rows, "cells": cells, "notes": notes,
         "metric": metric}  # fmt: skip
    from robustlab.serve.plots import history_svg

    h["plot"] = history_svg(h)  # cached with the rest
    return h


THUMB_PX = 48  # longest side of an example's thumbnail on a drill-down page


def data_spec(info: dict[str, Any], probe: str) -> dict[str, Any] | None:
    """The data spec the records of ``probe`` were evaluated on: an evaluation set's own data,
    else the suite's."""
    suite = info.get("suite") or {}
    for p in suite.get("probes") or []:
        if (p.get("label") or p.get("name")) == probe and p.get("data"):
            return p["data"]
    return suite.get("data")


def thumbnails(views: Views, info: dict[str, Any], probe: str, ids: list[int]) -> dict[int, str]:
    """Inline PNG ``data:`` URIs of the clean inputs of examples ``ids`` where the data are
    images (``[N, C, H, W]`` tensors, C = 1 or 3), else ``{}``. The dataset is rebuilt from the
    suite's spec (cached per spec); perturbed inputs of the first records are regenerated by
    :meth:`Views.regenerated`."""
    spec = data_spec(info, probe)
    if not spec or not ids:
        return {}

    def load() -> Any:  # the process context's copy: the regenerated examples share it
        from robustlab.runner.context import process_context
        from robustlab.runner.suite import ComponentSpec

        try:
            return process_context().data(ComponentSpec.model_validate(spec))
        except Exception:  # noqa: BLE001 - data unavailable here: the page shows no images
            return None

    ds = views._cached(("data", json.dumps(spec, sort_keys=True)), load)
    x = getattr(ds, "x", None)
    if x is None or not hasattr(x, "ndim") or x.ndim != 4 or x.shape[1] not in (1, 3):
        return {}
    import base64
    import io

    from PIL import Image

    index = {int(v): i for i, v in enumerate(ds.ids.tolist())}
    rows = [index[i] for i in ids if i in index]
    if not rows:
        return {}
    imgs = (x[rows].float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    h, w = imgs.shape[1:3]
    scale = max(1, THUMB_PX // max(h, w))
    out = {}
    for i, img in zip([i for i in ids if i in index], imgs, strict=True):
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        im.resize((w * scale, h * scale), Image.NEAREST).save(buf, format="PNG")
        out[i] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return out
