"""Export a run to MLflow: its summary metrics, parameters and report as artifacts.

Teams track experiments in MLflow; S44 ("Robustness in MLOps") asks for robustness results to
live next to them. One robustlab run becomes one MLflow run (run name = the robustlab run id, tag
``robustlab.run_id``) with

- metrics: every (model, kind, probe, level, metric) group of the report's "All metrics" table as
  ``<metric>/<model>/<kind>/<probe>/<level>`` (its 95% CI bounds as ``<metric>_lo``/``_hi``, and
  ``n``), and the per-model summary as ``summary/<model>/<field>`` (clean accuracy, worst OOD
  drop, worst adversarial and certified accuracy); names sanitised to MLflow's rules
  (alphanumerics, ``_ - . : /`` and spaces, at most 250 characters);
- params: suite name, seed, status, models, and each model's fingerprint;
- artifacts: the report's HTML and JSON under ``report/``.

A file store (``file:./mlruns``) needs no server; MLflow 3 keeps it in maintenance mode and refuses
it unless ``MLFLOW_ALLOW_FILE_STORE`` is set, which the export sets for a file URI (only if unset).
Every export creates a new MLflow run.

Example::

    from robustlab.export.mlflow import export_run
    from robustlab.store import Store

    res = export_run(Store("runs.db"), "latest-run-id", "file:./mlruns")
    res["mlflow_run_id"], res["n_metrics"]
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from typing import Any

from robustlab.core.errors import CapabilityError, ConfigError

MAX_KEY = 250  # MLflow's limit on metric and param names
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
BATCH = 1000  # MLflow's limit on metrics per log_batch call (params: 100)
SUMMARY_FIELDS = ("clean_accuracy", "seed_std", "ood_mean_drop", "ood_worst_drop",
                  "adv_worst_accuracy", "cert_worst_accuracy", "failing_examples")  # fmt: skip
_FIXED = ("model", "kind", "probe", "level", "n", "axis", "level_name", "norm")


def sanitize(name: str) -> str:
    """``name`` as a valid MLflow metric/param key: characters outside alphanumerics, ``_ - . :
    /`` and space become ``_``, ``..`` becomes ``_``, no leading ``/``, at most 250 characters.

    >>> sanitize("accuracy/digits-mlp/attack/pgd L∞/0.031")
    'accuracy/digits-mlp/attack/pgd L_/0.031'
    """
    out = re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)
    out = re.sub(r"\.\.+", "_", out).lstrip("/") or "_"
    return out[:MAX_KEY]


def _unique(keys: list[str]) -> list[str]:
    """Sanitised keys made unique: a key that collides after sanitising gets ``_2``, ``_3`` ..."""
    seen: set[str] = set()
    out = []
    for k in keys:
        base, key, n = sanitize(k), sanitize(k), 2
        while key in seen:
            suffix = f"_{n}"
            key, n = base[: MAX_KEY - len(suffix)] + suffix, n + 1
        seen.add(key)
        out.append(key)
    return out


def _level(v: Any) -> str:
    return "-" if v is None else f"{float(v):g}"


def metrics_of(content: dict[str, Any]) -> dict[str, float]:
    """The MLflow metrics (sanitised name -> value) of report ``content``
    (:func:`robustlab.report.build_report`); missing values (None) are left out."""
    raw: list[tuple[str, Any]] = []
    for r in content["sections"]["metrics"]["rows"]:
        where = f"{r['model']}/{r['kind']}/{r['probe']}/{_level(r['level'])}"
        names = [k for k in r if k not in _FIXED and not k.endswith(("_lo", "_hi", "_std"))]
        for m in names:
            raw += [(f"{m}/{where}", r[m]), (f"{m}_lo/{where}", r.get(f"{m}_lo")),
                    (f"{m}_hi/{where}", r.get(f"{m}_hi"))]  # fmt: skip
        raw.append((f"n/{where}", r["n"]))
    for r in content["summary"]["models"]:
        raw += [(f"summary/{r['model']}/{f}", r.get(f)) for f in SUMMARY_FIELDS]
    raw = [(k, v) for k, v in raw if v is not None and math.isfinite(float(v))]
    return dict(zip(_unique([k for k, _ in raw]), (float(v) for _, v in raw), strict=True))


def params_of(content: dict[str, Any]) -> dict[str, str]:
    """The MLflow params of report ``content``: suite, seed, status, models, fingerprints."""
    run = content["run"]
    raw = {"robustlab.run_id": run["id"], "suite": run.get("suite"), "seed": run.get("seed"),
           "status": run.get("status"), "models": ",".join(content["models"]),
           "n_records": run.get("n_records")}  # fmt: skip
    for model, fp in (run.get("fingerprints") or {}).items():
        raw[f"fingerprint/{model}"] = fp if isinstance(fp, str) else repr(fp)
    items = [(k, str(v)[:MAX_PARAM_VALUE]) for k, v in raw.items() if v is not None]
    return dict(zip(_unique([k for k, _ in items]), (v for _, v in items), strict=True))


def export_run(
    store: Any, run_id: str, tracking_uri: str = "file:./mlruns", experiment: str | None = None
) -> dict[str, Any]:
    """Log run ``run_id`` of ``store`` to MLflow at ``tracking_uri`` (experiment ``experiment``,
    default the suite name, created if missing). Returns ``mlflow_run_id``, ``experiment``,
    ``n_metrics``, ``n_params`` and the logged ``metrics`` (name -> value)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise CapabilityError(
            f"exporting to MLflow needs mlflow: pip install 'robustlab[mlflow]' ({e})"
        ) from None
    from robustlab.report.build import build_report, write_report

    content = build_report(store, run_id)
    metrics, params = metrics_of(content), params_of(content)
    name = experiment or content["run"].get("suite") or "robustlab"
    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        mrun = client.create_run(exp_id, run_name=run_id, tags={"robustlab.run_id": run_id})
        rid = mrun.info.run_id
        ts = int(time.time() * 1000)  # MLflow's timestamps: milliseconds since the epoch
        items = [Metric(k, v, ts, 0) for k, v in metrics.items()]
        for i in range(0, len(items), BATCH):
            client.log_batch(rid, metrics=items[i : i + BATCH])
        plist = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(plist), 100):
            client.log_batch(rid, params=plist[i : i + 100])
        client.log_batch(rid, tags=[RunTag("robustlab.suite", str(content["run"].get("suite")))])
        with tempfile.TemporaryDirectory() as tmp:
            html, js = write_report(store, run_id, tmp)
            client.log_artifact(rid, str(html), "report")
            client.log_artifact(rid, str(js), "report")
        client.set_terminated(rid)
    except MlflowException as e:
        raise ConfigError(f"MLflow at {tracking_uri}: {str(e).splitlines()[0]}") from None
    except ImportError as e:  # mlflow-skinny: a database backend needs the full mlflow
        raise CapabilityError(
            f"MLflow at {tracking_uri} needs a module mlflow-skinny lacks ({e}): use a file "
            "store (file:./mlruns) or pip install mlflow"
        ) from None
    return {"mlflow_run_id": rid, "experiment": name, "n_metrics": len(metrics),
            "n_params": len(params), "metrics": metrics}  # fmt: skip
