"""The ``interpolated`` model: weight-space interpolation of two models of one architecture.

WiSE-FT (Wortsman et al., 2022) and S12 (Abdollahpour et al., "In Search of the Successful
Interpolation: On the Role of Sharpness in CLIP Generalization"): ``(1 - alpha) * a + alpha * b``
in weight space, where ``a`` is typically the pretrained (or robust) model and ``b`` its
fine-tuned version. As a registered model it is evaluated by any suite::

    models:
      - name: interpolated
        params:
          a: {name: trained, params: {...pretrained...}}
          b: {name: trained, params: {base: {name: trained, params: {...pretrained...}}, ...}}
          alpha: 0.5
          layers: [head.1]        # optional: interpolate only these layers, the others keep a

Models of different architectures are refused with a :class:`~robustlab.core.errors.ConfigError`
naming the first mismatching tensor. See :mod:`robustlab.training.weightspace` and
docs/weight-space.md.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import models
from robustlab.core.types import Rate
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param


@models.register("interpolated")
def interpolated(
    a: spec_param("models"),  # type: ignore[valid-type]
    b: spec_param("models"),  # type: ignore[valid-type]
    alpha: Rate = 0.5,
    layers: list[str] | None = None,
) -> TorchClassifier:
    """The weights ``(1 - alpha) * a + alpha * b`` of two torch models ``a`` and ``b`` ({name,
    params} specs) of one architecture, with ``a``'s adapter (normalization, domain, classes).

    ``alpha = 0`` is ``a`` and ``alpha = 1`` is ``b``, bit-exactly. ``layers``: interpolate only
    these layers (module names such as ``"head.1"``; the others keep ``a``'s weights).
    """
    from robustlab.training import weightspace as ws

    ma, mb = (
        models.create(a["name"], a.get("params") or {}),
        models.create(b["name"], b.get("params") or {}),
    )
    for what, m in (("a", ma), ("b", mb)):
        if not isinstance(getattr(m, "module", None), torch.nn.Module):
            raise CapabilityError(
                f"interpolated: model {what} ({type(m).__name__}) is not a torch model with weights"
            )
    if type(ma.module) is not type(mb.module):
        raise ConfigError(
            f"interpolated: models a and b have different architectures "
            f"({type(ma.module).__name__} vs {type(mb.module).__name__})"
        )
    sa, sb = ma.module.state_dict(), mb.module.state_dict()
    ws.check_compatible(sa, sb)
    for attr in ("mean", "std"):
        va, vb = getattr(ma, attr), getattr(mb, attr)
        if (va is None) != (vb is None) or (va is not None and not bool((va == vb).all())):
            raise ConfigError(f"interpolated: models a and b normalize inputs differently ({attr})")
    weights: float | dict[str, float] = alpha
    if layers is not None:
        known = ws.layers(sa)
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ConfigError(f"interpolated: unknown layers {unknown}; layers: {known}")
        weights = dict.fromkeys(layers, alpha)
    clf: Any = copy.deepcopy(ma)
    clf.module.load_state_dict(ws.interpolate(sa, sb, weights))
    clf.module.eval()
    clf.name = f"interpolated-{alpha:g}"
    return clf
