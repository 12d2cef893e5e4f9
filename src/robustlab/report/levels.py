"""What a probe's level means (its axis): an Lp epsilon or radius with its norm, a severity, a patch
area fraction, an edit rate, a word budget, ... -- for plot axes, column heads and number formats.

The meaning is read from the run's suite and the components' own declarations in the registries,
never guessed from a probe's label:

* ``certifier``: a radius in the norm the certifier declares (``norm`` attribute: ``smoothing`` L2,
  ``ibp``/``milp`` L∞);
* ``attack``: the attack's declared threat (``threat = "patch" | "edit" | "severity"``; ranking
  attacks declare ``modality = "ranking"``: a budget of edited words), else an epsilon in the
  probe's ``norm``;
* ``conformal``: the level of the perturbation or attack the probe applies (default ``pgd``: an
  epsilon in the probe's norm);
* ``perturbation``: the level name the perturbation declares (``level_name``, e.g.
  ``patch_corruption``'s patch fraction; or ``what`` of a registered level domain), else
  ``edit rate`` for text perturbations and ``severity`` otherwise.

Two probes share a plot axis only when their :class:`Axis` labels are equal, so L∞ and L2 budgets,
severities and patch fractions never mix on one axis.

Example::

    axes = probe_axes(store.run_info(run_id))
    axes["pgd-l2"].label          # 'epsilon (L2)'
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

NORMS = {"inf": "L∞", "2": "L2", "1": "L1"}


@dataclass(frozen=True)
class Axis:
    """A level's meaning: ``name`` ("epsilon", "radius", "severity", ...) and, for Lp balls, ``norm``."""

    name: str
    norm: str | None = None

    @property
    def label(self) -> str:
        """``name (L∞)`` for Lp balls, ``name`` otherwise."""
        return f"{self.name} ({NORMS.get(self.norm, 'L' + self.norm)})" if self.norm else self.name


# the meaning of a level where a probe is not in the suite (hand-written records)
DEFAULTS = {
    "clean": Axis("level"),
    "evalset": Axis("level"),
    "perturbation": Axis("severity"),
    "attack": Axis("epsilon"),
    "certifier": Axis("radius"),
    "conformal": Axis("attack epsilon"),
    "diagnosis": Axis("level"),
}
_THREATS = {"patch": "patch area fraction", "edit": "edit rate", "severity": "severity bound"}


def _norm(v: Any) -> str | None:
    from robustlab.core.types import parse_norm

    try:
        return parse_norm(v)
    except Exception:  # noqa: BLE001 - an unreadable norm in an old run: no norm named
        return None


def _component(registry: Any, name: str, params: dict[str, Any] | None) -> Any:
    """The component (constructed: ``__init__`` only stores parameters), else its class, else None."""
    try:
        factory = registry.get(name)
    except Exception:  # noqa: BLE001 - a plugin that is no longer installed
        return None
    with contextlib.suppress(Exception):
        return factory(**dict(params or {}))
    return factory


def _declared_name(registry: Any, name: str, obj: Any) -> str | None:
    """A level name the component declares: its ``level_name`` or its registered level domain's ``what``."""
    declared = getattr(obj, "level_name", None)
    if isinstance(declared, str) and declared:
        return declared
    domain = getattr(obj, "levels", None)
    if domain is None:
        with contextlib.suppress(Exception):
            domain = registry.levels(name)  # type: ignore[attr-defined]
    what = getattr(domain, "what", None)
    return what if isinstance(what, str) and what not in ("", "level") else None


def perturbation_axis(name: str, params: dict[str, Any] | None) -> Axis:
    from robustlab.core.registry import perturbations

    obj = _component(perturbations, name, params)
    declared = _declared_name(perturbations, name, obj)
    if declared:
        return Axis(declared)
    return Axis("edit rate" if getattr(obj, "modality", None) == "text" else "severity")


def attack_axis(name: str, params: dict[str, Any] | None, norm: Any) -> Axis:
    from robustlab.core.registry import attacks

    obj = _component(attacks, name, params)
    threat = getattr(obj, "threat", None)
    if isinstance(threat, str) and threat in _THREATS:
        return Axis(_THREATS[threat])
    if getattr(obj, "modality", None) == "ranking":
        return Axis("edited words (budget)")
    if getattr(obj, "modality", None) == "text":
        return Axis("edit rate")
    return Axis("epsilon", _norm(norm))


def certifier_axis(name: str, params: dict[str, Any] | None) -> Axis:
    from robustlab.core.registry import certifiers

    obj = _component(certifiers, name, params)
    return Axis("radius", _norm(getattr(obj, "norm", None)) if obj is not None else None)


def conformal_axis(params: dict[str, Any] | None, norm: Any) -> Axis:
    params = params or {}
    if params.get("perturbation"):
        return perturbation_axis(params["perturbation"], params.get("perturbation_params"))
    axis = attack_axis(params.get("attack") or "pgd", params.get("attack_params"), norm)
    return Axis(f"attack {axis.name}", axis.norm) if axis.norm else axis


def probe_axis(spec: dict[str, Any]) -> Axis:
    """The axis of one probe of a suite (a probe spec as stored with the run)."""
    kind, name, params = spec.get("kind"), spec.get("name", ""), spec.get("params")
    norm = spec.get("norm", "inf")
    if kind == "perturbation":
        return perturbation_axis(name, params)
    if kind == "attack":
        return attack_axis(name, params, norm)
    if kind == "certifier":
        return certifier_axis(name, params)
    if kind == "conformal":
        return conformal_axis(params, norm)
    return DEFAULTS.get(str(kind), Axis("level"))


def _label(spec: dict[str, Any]) -> str | None:
    """A probe's display label as the runner writes it into records (``ProbeSpec.display``)."""
    from robustlab.runner.suite import ProbeSpec

    try:
        return ProbeSpec.model_validate(spec).display
    except Exception:  # noqa: BLE001 - an old or hand-written spec: its label or name
        return spec.get("label") or spec.get("name")


def probe_axes(info: dict[str, Any]) -> dict[str, Axis]:
    """Probe display label -> :class:`Axis`, for every probe of the run's suite."""
    specs = [p for p in ((info.get("suite") or {}).get("probes") or []) if isinstance(p, dict)]
    return {str(label): probe_axis(p) for p in specs if (label := _label(p))}


def axis_for(axes: dict[str, Axis], kind: str, probe: str) -> Axis:
    """The axis of ``probe`` (of records of ``kind``): from the suite, else the kind's default."""
    return axes.get(probe) or DEFAULTS.get(kind, Axis("level"))
