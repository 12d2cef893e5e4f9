"""Features for diagnoses: named layers of a torch classifier, read in one batched forward pass.

Names a diagnosis may ask for:

* ``"logits"``: the model's output (every classifier has it, black-box ones included);
* ``"penultimate"``: the input of the model's last ``nn.Linear`` (the representation the
  classifier reads), flattened;
* ``"input"``: the raw input, flattened;
* any name of :func:`layer_names` (a submodule of ``model.module``, e.g. ``"net.3"``): that
  module's output, flattened.

:func:`extract` runs the model once over the data in chunks, without gradients, and returns all
requested layers from forward hooks; :meth:`robustlab.diagnose.base.DiagnosisEnv.features` caches
the result per run, so detectors, calibration and probes of one run share one pass.

Example::

    feats = extract(clf, data.x, ("penultimate", "net.2"))
    feats["logits"].shape, feats["penultimate"].shape
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from robustlab.core.errors import CapabilityError, ConfigError

SPECIAL = ("logits", "penultimate", "input")


def module_of(model: Any) -> nn.Module | None:
    """The ``nn.Module`` behind a torch adapter, or None for black-box models."""
    m = getattr(model, "module", None)
    return m if isinstance(m, nn.Module) else None


def layer_names(model: Any) -> list[str]:
    """Every layer name :func:`extract` accepts for ``model`` (special names first)."""
    m = module_of(model)
    if m is None:
        return ["logits"]
    return list(SPECIAL) + [n for n, _ in m.named_modules() if n]


def check_layers(model: Any, layers: Sequence[str], who: str = "diagnosis") -> None:
    """Refuse layer names the model does not have, listing those it has."""
    have = layer_names(model)
    missing = [name for name in layers if name not in have]
    if not missing:
        return
    if module_of(model) is None:
        raise CapabilityError(
            f"{who}: model {type(model).__name__} is black-box (no torch module), so only its "
            f"'logits' can be read, not {missing}; use logit-based detectors (msp, maxlogit, "
            f"energy) or a torch model"
        )
    shown = ", ".join(have[:60]) + (" ..." if len(have) > 60 else "")
    raise ConfigError(f"{who}: model has no layer {missing[0]!r}; its layers: {shown}")


def has_penultimate(model: Any) -> bool:
    """Whether ``model`` has a ``"penultimate"`` layer (a torch module with an ``nn.Linear``)."""
    m = module_of(model)
    return m is not None and any(isinstance(sub, nn.Linear) for sub in m.modules())


def _last_linear(m: nn.Module) -> nn.Module:
    last = None
    for sub in m.modules():
        if isinstance(sub, nn.Linear):
            last = sub
    if last is None:
        raise CapabilityError(
            f"'penultimate' is the input of the model's last nn.Linear; {type(m).__name__} has "
            f"none: name a layer instead (see robustlab.diagnose.features.layer_names)"
        )
    return last


@contextmanager
def capture(
    model: Any, layers: Sequence[str], detach: bool = True
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks on ``layers`` (names of :func:`layer_names` other than ``logits`` and
    ``input``) while the block runs: each forward pass of the model appends every layer's value,
    flattened to ``[B, D]``, to its list. ``detach=False`` keeps the autograd graph (input
    gradients through a layer, e.g. Mahalanobis input preprocessing) and the device; otherwise
    values are detached float32 CPU copies."""
    m = module_of(model)
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def keep(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1) if not detach else t.detach().flatten(1).float().cpu()

    handles = []
    if m is not None and layers:
        named = dict(m.named_modules())
        for name in layers:
            if name == "penultimate":
                handles.append(_last_linear(m).register_forward_pre_hook(
                    lambda _m, args, _n=name: captured[_n].append(keep(args[0]))
                ))  # fmt: skip
            else:
                handles.append(named[name].register_forward_hook(
                    lambda _m, _a, out, _n=name: captured[_n].append(keep(_first(out)))
                ))  # fmt: skip
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def extract(
    model: Any, x: torch.Tensor, layers: Sequence[str] = ("penultimate",), chunk: int = 1024
) -> dict[str, torch.Tensor]:
    """``{"logits": [N, C], **{layer: [N, D]}}`` (float32, CPU) from one pass over ``x``; inputs
    that are not tensors (texts) give their logits only."""
    check_layers(model, [*layers, "logits"], "features")
    wanted = [name for name in layers if name not in ("logits", "input")]
    if not isinstance(x, torch.Tensor) and (wanted or "input" in layers):
        raise CapabilityError(
            "features: this model's inputs are not tensors, so only its 'logits' can be read "
            "(text models: use their embeddings)"
        )
    logits = []
    with capture(model, wanted) as captured:
        for i in range(0, len(x), chunk):
            logits.append(model.logits(x[i : i + chunk]).detach().float().cpu())
    out = {"logits": torch.cat(logits) if logits else torch.zeros(0)}
    for name in wanted:
        if len(captured[name]) != len(logits):
            raise ConfigError(
                f"features: layer {name!r} ran {len(captured[name])} times in {len(logits)} "
                f"batches (a layer used twice per pass, or not at all, cannot be read)"
            )
        out[name] = torch.cat(captured[name])
    if "input" in layers:
        out["input"] = x.detach().flatten(1).float().cpu()
    return out


def _first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError(f"features: a layer returned {type(out).__name__}, not a tensor")
