"""``freq-prompted``: a frozen torch model behind test-time frequency-domain prompts (S6).

See :mod:`robustlab.defenses.freq_prompt` and docs/freq-prompts.md. The model as created has zero
prompts and no prototypes (it equals its base); the prompts are learnt by the ``freq-prompt``
trainer through the ``trained`` model, which also caches them::

    models:
      - name: trained
        params:
          base: {name: freq-prompted, params: {base: {name: digits-cnn}, clusters: 8}}
          data: {name: digits, params: {split: train}}
          trainer: {name: freq-prompt, params: {eps: 0.1}}
          epochs: 5
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import models
from robustlab.core.types import PositiveInt, Rate
from robustlab.defenses.freq_prompt import Features, FreqPromptNet
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param


@models.register("freq-prompted")
def freq_prompted(
    base: spec_param("models"),  # type: ignore[valid-type]
    clusters: PositiveInt = 8,
    band: Rate = 0.25,
    features: Features = "logits",
) -> TorchClassifier:
    """``base`` ({name, params}: a registered torch image classifier, kept frozen) behind one
    additive prompt per cluster, restricted to the frequencies of normalised radius >= ``band``
    (S6, Huang et al., 2023). An input's prompt is that of the nearest of ``clusters`` prototypes
    of its ``features`` (the base's ``logits``, or its ``pixels``). Train the prompts with the
    ``freq-prompt`` trainer (as the base of a ``trained`` model); until then they are zero."""
    from robustlab.training.api import component

    name, params = component(base, "models", models)
    clf: Any = models.create(name, params)
    if not isinstance(getattr(clf, "module", None), nn.Module):
        raise CapabilityError(
            f"freq-prompted needs a torch model as base, got {name!r} ({type(clf).__name__})"
        )
    shape = clf.domain.shape
    if shape is None or len(shape) != 3 or any(not isinstance(v, int) for v in shape):
        raise ConfigError(
            f"freq-prompted needs an image model with a fixed input shape [C, H, W]; base {name!r} "
            f"declares {shape}"
        )
    net = FreqPromptNet(clf.module, shape, clusters, band, features, clf.num_classes,
                        clf.mean, clf.std)  # fmt: skip
    out = TorchClassifier(net, clf.num_classes, clf.domain, device=clf.device, name="freq-prompted")
    out.undefended = clf  # type: ignore[attr-defined]
    out.defence = {  # type: ignore[attr-defined]
        "name": "freq-prompted", "clusters": clusters, "band": band, "features": features,
        "selection": "nearest prototype, held fixed in the gradient (BPDA)",
    }  # fmt: skip
    return out
