"""Suites: what to evaluate -- models x data x probes x metrics -- as validated data.

Write them in YAML (loaded with ``yaml.safe_load``: no executable tags) or build them in Python::

    suite = Suite(
        name="my-eval",
        models=[ModelSpec(name="digits-cnn", replicates=[0, 1, 2])],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=[ProbeSpec(kind="attack", name="pgd", levels=[0.05, 0.1], norm="inf")],
    )

``Suite.validate_components()`` checks every name against its registry (with did-you-mean
suggestions) and every parameter against the component's signature before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from robustlab.core.errors import ConfigError
from robustlab.core.types import INT64_MAX, Norm, Seed

MAX_LEVELS = 1000  # levels per probe
MAX_REPLICATES = 100  # replicates per model

Level = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # 0.1 or 1, never "0.1" or .nan


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ComponentSpec(_Strict):
    """A registered component and its keyword parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(ComponentSpec):
    """A model factory; each replicate seed is passed as ``seed`` (training seeds for i.i.d. spread)."""

    label: str | None = None
    replicates: list[Annotated[Seed, Strict()]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=MAX_REPLICATES
    )

    @model_validator(mode="after")
    def _distinct(self) -> ModelSpec:
        _no_duplicates(self.replicates, f"model {self.display!r} replicates")
        return self

    @property
    def display(self) -> str:
        return self.label or self.name


ProbeKind = Literal["perturbation", "attack", "certifier", "evalset", "conformal", "diagnosis"]


class ProbeSpec(_Strict):
    """One probe: a perturbation (levels = severities), attack (levels = eps, with ``norm``),
    certifier (levels = radii), evaluation set (``data``), conformal predictor (levels = attack
    eps, 0 = clean; see :mod:`robustlab.certify.conformal_probe`) or diagnosis (levels optional,
    default one run at level 0; ``data`` replaces the suite's data; see :mod:`robustlab.diagnose`)."""

    kind: ProbeKind
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    levels: list[Level] = Field(default_factory=list, max_length=MAX_LEVELS)
    norm: Norm = "inf"
    label: str | None = None
    data: ComponentSpec | None = None
    models: list[str] | None = None  # model labels this probe applies to (default: all)

    @model_validator(mode="after")
    def _levels(self) -> ProbeSpec:
        if self.kind == "evalset":
            if self.data is None:
                raise ValueError(f"evalset probe {self.name!r} needs 'data'")
        elif not self.levels and self.kind != "diagnosis":
            raise ValueError(f"{self.kind} probe {self.name!r} needs at least one level")
        if self.kind == "evalset" and self.levels:
            raise ValueError(f"evalset probe {self.name!r} takes no levels (it runs once)")
        _no_duplicates(self.levels, f"{self.kind} probe {self.name!r} levels")
        # each component declares its level domain (see runner/validation.py): perturbation
        # levels may be signed (rotation angle, shrinking scale, darker brightness)
        return self

    @property
    def run_levels(self) -> list[float]:
        """The levels units are planned for (a diagnosis without levels runs once, at 0)."""
        return list(self.levels) if self.levels or self.kind != "diagnosis" else [0.0]

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        if self.kind == "attack" and self.norm != "inf":
            return f"{self.name}-l{self.norm}"
        return self.name


class SliceSpec(_Strict):
    """A subpopulation by metadata: ``by: col`` (one slice per value) or ``where: {col: [values]}``."""

    name: str | None = None
    by: str | None = None
    where: dict[str, list[Any]] | None = None

    @model_validator(mode="after")
    def _one(self) -> SliceSpec:
        if (self.by is None) == (self.where is None):
            raise ValueError("a slice needs exactly one of 'by' or 'where'")
        if self.where is not None and not self.name:
            raise ValueError("a 'where' slice needs a 'name'")
        return self


class Suite(_Strict):
    """Models x data x probes x metrics, with a seed; the unit of a run."""

    name: str
    task: ComponentSpec = ComponentSpec(name="classification")
    models: list[ModelSpec]
    data: ComponentSpec
    probes: list[ProbeSpec] = Field(default_factory=list)
    slices: list[SliceSpec] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    seed: Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)] = 0  # the store's ints are int64
    shard_size: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] = 512

    @model_validator(mode="before")
    @classmethod
    def _model_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data:
            if "models" in data:
                raise ValueError("give either 'model' or 'models', not both")
            data = {k: v for k, v in data.items() if k != "model"} | {"models": [data["model"]]}
        return data

    @model_validator(mode="after")
    def _unique(self) -> Suite:
        labels = [m.display for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model labels must be unique (got {labels}); set 'label'")
        probes = [p.display for p in self.probes]
        if len(set(probes)) != len(probes):
            raise ValueError(f"probe labels must be unique (got {probes}); set 'label'")
        for p in self.probes:
            unknown = sorted(set(p.models or []) - set(labels))
            if unknown:
                raise ValueError(
                    f"probe {p.display!r} names unknown models {unknown} (models: {labels})"
                )
        return self

    # loading ----------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, source: str | Path) -> Suite:
        """Load from a YAML file path or YAML text (bounded safe loader: see
        :mod:`robustlab.runner.loading`)."""
        from robustlab.runner.loading import load_yaml, read_text

        where = str(source)
        if isinstance(source, Path) or (
            "\n" not in str(source) and str(source).endswith((".yaml", ".yml"))
        ):
            p = Path(source)
            if not p.is_file():
                raise ConfigError(f"suite file {where!r} does not exist")
            text = read_text(p)
        else:
            where, text = "<yaml>", str(source)
        data = load_yaml(text, where)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a suite must be a YAML mapping, got {type(data).__name__}")
        return cls.parse(data, where)

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "<suite>") -> Suite:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "suite"
            msg = " ".join(str(err["msg"]).split()).removeprefix("Value error, ")
            raise ConfigError(f"{where}: {loc}: {msg}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_defaults=True), sort_keys=False)

    def content_hash(self) -> str:
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()

    # validation -------------------------------------------------------------------------------
    def validate_components(self) -> None:
        """Check every component name, parameter and level domain against the registries (no
        data or model loaded; see :mod:`robustlab.runner.validation` for the full check)."""
        from robustlab.runner.validation import validate_components

        validate_components(self)


def _no_duplicates(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} list {v!r} twice (each would run, and be stored, twice)")
        seen.add(v)
