"""``robustlab train SPEC.yaml``: train from a YAML spec, write the model files, compare before/after.

The YAML holds the ``trained`` model's parameters (or ``{name: trained, params: ...}``) and an
optional ``evaluate`` section, ``{data: {name, params}, eps, steps, limit}``: the data the
before/after table is measured on (default: the training dataset's ``test`` split, first
``limit`` = 1,000 examples; 0 = all), the radius ``eps`` (default: ``eval_eps``, else the trainer's
eps, else 0.1) in the trainer's norm, and the PGD steps (default 20).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from robustlab.attacks.pgd import PGD
from robustlab.core.errors import ConfigError
from robustlab.core.registry import check_params, datasets, models
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import NonNegativeInt, Positive, PositiveInt, ThreatModel
from robustlab.training.api import DEFAULT_DATA, export, train, trained_params


def evaluate_section(
    data: dict[str, Any] | None = None,
    eps: Positive | None = None,
    steps: PositiveInt = 20,
    limit: NonNegativeInt = 1000,
) -> dict[str, Any]:
    """The ``evaluate`` section of a training spec (checked like a component's parameters)."""
    return {"data": data, "eps": eps, "steps": steps, "limit": limit}


def check_spec(spec: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a training spec without training: the ``trained`` model's parameters (nested
    base/data/trainer specs against their registries and domains) and the ``evaluate`` section.
    Returns the spec without ``evaluate`` and the checked ``evaluate`` settings."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a training spec must be a mapping")
    spec = dict(spec)
    section = spec.pop("evaluate", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'evaluate' must be a mapping")
    ev = evaluate_section(**check_params(evaluate_section, section, "training spec 'evaluate'"))
    check_params(models.get("trained"), trained_params(spec), "model 'trained'")
    return spec, ev


def run_spec(path: str, out: str, progress: bool) -> dict[str, Any]:
    """Train the spec at ``path``, export to ``out`` and measure the base and trained models."""
    from robustlab.runner.loading import load_yaml, read_text

    spec, ev = check_spec(load_yaml(read_text(Path(path)), path), path)
    params = trained_params(spec)
    clf = train(spec, progress=progress)
    base = params["base"]
    before = models.create(base["name"], base.get("params") or {})
    eps = ev["eps"] or params.get("eval_eps") or _trainer_eps(params) or 0.1
    norm = str((params.get("trainer") or {}).get("params", {}).get("norm", "inf"))
    data = _eval_data(ev["data"], params.get("data") or DEFAULT_DATA, ev["limit"])
    threat = ThreatModel(norm, eps)
    rows = {
        "before": measure(before, data, threat, ev["steps"]),
        "after": measure(clf, data, threat, ev["steps"]),
    }
    return {"paths": export(clf, out), "rows": rows, "eps": eps, "norm": norm,
            "data": data.name, "n": len(data), "model": clf}  # fmt: skip


def measure(clf: Any, data: Any, threat: ThreatModel, steps: int) -> dict[str, float]:
    """Clean and PGD (``steps``, one restart) accuracy of ``clf`` on ``data``."""
    clf.module.eval()
    x, y = data.x.to(clf.device), data.y.to(clf.device)
    with torch.no_grad():
        clean = float((clf.logits(x).argmax(1) == y).float().mean())
    res = PGD(steps=steps)(clf, x, y, threat, rng=ExampleRNG.from_seed(0, data.ids))
    return {"clean": clean, "pgd": 1.0 - float(res.success.float().mean())}


def _trainer_eps(params: dict[str, Any]) -> float | None:
    t = params.get("trainer") or {}
    return (t.get("params") or {}).get("eps") if isinstance(t, dict) else None


def _eval_data(spec: dict[str, Any] | None, train_spec: dict[str, Any], limit: int) -> Any:
    if spec is None:
        name, p = train_spec["name"], dict(train_spec.get("params") or {})
        accepted = inspect.signature(datasets.get(name)).parameters
        if "split" not in accepted:
            raise ConfigError(
                f"training data {name!r} has no test split: give evaluate.data in the spec"
            )
        p["split"] = "test"
        p.pop("limit", None)
        spec = {"name": name, "params": p}
    d = datasets.create(spec["name"], spec.get("params") or {})
    return d.take(range(min(limit, len(d)))) if limit else d
