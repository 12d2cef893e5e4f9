"""The ``patched`` model: a base model with robust weight signatures (S11) added to its weights.

Cai et al., "Robust Weight Signatures" (ICML 2023); see :mod:`robustlab.training.rws` and
docs/weight-patches.md. Each patch is a file written by :meth:`robustlab.training.rws.Patch.save`
(``{path: ...}``) or extracted on the fly from two model specs of the base's architecture
(``{clean: <model spec>, robust: <model spec>, layers: k, bits: 8}``); ``scales`` gives one
coefficient per patch (default 1). A suite evaluates the patched model like any other::

    models:
      - name: patched
        params:
          base: {name: trained, params: {...}}          # the clean model
          patches: [{path: blur.rws.pt}, {path: noise.rws.pt}]
          scales: [1.0, 0.5]
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import torch
from pydantic import AfterValidator

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param

_FROM_FILE = {"path"}
_FROM_MODELS = {"clean", "robust", "layers", "bits", "corruption"}


def _check_source(value: Any) -> Any:
    """A patch source: ``{path: file}`` or ``{clean: spec, robust: spec[, layers, bits,
    corruption]}``; model specs are checked against the models registry."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ValueError(f"a patch source mapping ({{path: ...}} or {{clean: ..., robust: ...}}), "
                         f"got {type(value).__name__}")  # fmt: skip
    keys = set(value)
    if "path" in keys:
        if keys != _FROM_FILE or not isinstance(value["path"], str):
            raise ValueError(f"{{path: <file>}} alone, got keys {sorted(keys)}")
        return value
    if not {"clean", "robust"} <= keys or keys - _FROM_MODELS:
        raise ValueError(
            f"{{path: <file>}} or {{clean: <model spec>, robust: <model spec>, layers?, bits?, "
            f"corruption?}}, got keys {sorted(keys)}"
        )
    check = spec_param("models").__metadata__[0].func
    check(value["clean"]), check(value["robust"])
    layers, bits = value.get("layers"), value.get("bits")
    if layers is not None and (
        not isinstance(layers, int) or isinstance(layers, bool) or layers < 1
    ):
        raise ValueError(f"layers a positive integer, got {layers!r}")
    if bits not in (None, 4, 8):
        raise ValueError(f"bits 4, 8 or null, got {bits!r}")
    return value


PatchSource = Annotated[Any, AfterValidator(_check_source)]


def load_patch(source: Any) -> Any:
    """The :class:`~robustlab.training.rws.Patch` of a ``patched`` model's patch source."""
    from robustlab.training import rws

    source = _check_source(source)
    if "path" in source:
        return rws.Patch.load(source["path"])
    clean = models.create(source["clean"]["name"], source["clean"].get("params") or {})
    robust = models.create(source["robust"]["name"], source["robust"].get("params") or {})
    return rws.extract(
        clean, robust, layers=source.get("layers"), bits=source.get("bits"),
        corruption=source.get("corruption"),
    )  # fmt: skip


@models.register("patched")
def patched(
    base: spec_param("models"),  # type: ignore[valid-type]
    patches: list[PatchSource],
    scales: list[float] | None = None,
) -> TorchClassifier:
    """``base`` (a torch model spec: the clean model) with ``patches`` (robust weight signatures,
    S11, Cai et al. 2023) added to its weights, patch ``i`` times ``scales[i]`` (default 1).

    A patch source is ``{path: <file written by Patch.save>}`` or ``{clean: <model spec>, robust:
    <model spec>, layers: <first k layers>, bits: <8 | 4>}`` (extracted when the model is
    built). A patch of another architecture: ``ConfigError`` naming the first mismatching tensor.
    """
    from robustlab.training import rws

    if not patches:
        raise ConfigError("model 'patched' needs at least one patch")
    if scales is not None and len(scales) != len(patches):
        raise ConfigError(
            f"model 'patched': {len(scales)} scales for {len(patches)} patches (one per patch)"
        )
    clf = models.create(base["name"], base.get("params") or {})
    if not isinstance(getattr(clf, "module", None), torch.nn.Module):
        raise ConfigError(f"model 'patched' needs a torch base model; {base['name']!r} is not one")
    clf = copy.deepcopy(clf)
    loaded = [load_patch(p) for p in patches]
    rws.apply(clf, loaded, scales)  # permanent: the handle is dropped
    clf.module.eval()
    clf.name = f"patched-{getattr(clf, 'name', base['name'])}"
    clf.patches = [p.meta for p in loaded]
    summary = [
        {k: p.meta.get(k) for k in ("corruption", "bits", "layers", "arch_hash")} | {"scale": s}
        for p, s in zip(loaded, scales or [1.0] * len(loaded), strict=True)
    ]
    if isinstance(getattr(clf, "provenance", None), dict):  # a trained base: say it is patched
        clf.provenance = {**clf.provenance, "patches": summary}
    return clf
