"""``mixed``: adaptive smoothing, a mixture of a standard and a robust classifier's probabilities
(S17: Bai, Anderson, Kim & Sojoudi, "Improving the Accuracy-Robustness Trade-Off of Classifiers
via Adaptive Smoothing", SIMODS 2024).

The mixed classifier's output (log-probabilities, so its softmax is the mixture) is

    f(x) = log( (1 - alpha(x)) softmax(s_g g(x)) + alpha(x) softmax(s_h h(x)) )

with ``g`` the standard (accurate, non-robust) model, ``h`` the robust model, ``s_g``/``s_h`` their
logit scales (``std_scale``/``rob_scale``, the paper's base-model temperatures) and ``alpha``
either fixed or the output of a small mixing network (``mixer: learned``): ``alpha(x) =
sigmoid(m(log softmax(s_g g(x)), log softmax(s_h h(x))))``, an MLP on both models' log-probabilities
(the paper's mixing network reads the base models' features; here their outputs), its output
bias initialised so that the untrained mixer gives ``alpha``. It is computed stably as a
``logsumexp`` of ``log(1 - alpha) + log softmax`` and ``log(alpha) + log softmax``, so ``alpha = 0``
and ``alpha = 1`` give exactly the endpoints' log-softmax.

The whole mixture is one ``nn.Module`` (both base models with their normalization, the mixer):
every white-box attack differentiates the mixture end to end, ``alpha(x)`` included. The base
models are frozen parts: :meth:`MixedModule.train` keeps them in eval mode, and the ``mixer``
trainer (:mod:`robustlab.training.mixer`) trains only the mixing network.

Example (a suite model; the learned mixer is trained by the ``trained`` model)::

    models:
      - name: mixed
        params: {standard: {name: digits-cnn}, robust: {name: trained, params: {...}}, alpha: 0.5}
      - name: trained
        params:
          base: {name: mixed, params: {standard: ..., robust: ..., mixer: learned}}
          data: {name: digits, params: {split: train}}
          trainer: {name: mixer, params: {eps: 0.2}}
          epochs: 5
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models
from robustlab.core.rng import seeded
from robustlab.core.types import Positive, PositiveInt, Rate, Seed
from robustlab.models.defended import base_module
from robustlab.models.torch_adapter import TorchClassifier
from robustlab.models.trained import spec_param


class MixingNet(nn.Module):
    """``[log p_g, log p_h] -> gamma`` (one logit per example; ``alpha = sigmoid(gamma)``)."""

    def __init__(self, num_classes: int, hidden: int, alpha: float, reads: str = "both") -> None:
        super().__init__()
        self.reads = reads
        width = 2 * num_classes if reads == "both" else num_classes
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():  # start at the fixed alpha: sigmoid(bias) = alpha, small weights
            last.weight.mul_(0.1)
            last.bias.fill_(math.log(alpha / (1 - alpha)))

    def forward(self, logp_g: torch.Tensor, logp_h: torch.Tensor) -> torch.Tensor:
        if self.reads == "robust":
            return self.net(logp_h)
        return self.net(torch.cat([logp_g, logp_h], dim=1))


class MixedModule(nn.Module):
    """The adaptive-smoothing mixture as one module (see the module docstring for the formula).

    ``standard``, ``robust``: modules from raw inputs to logits; ``mixer``: a :class:`MixingNet`
    or None for the fixed ``alpha``. :meth:`mix` returns the log-probabilities and ``alpha``.
    """

    def __init__(
        self,
        standard: nn.Module,
        robust: nn.Module,
        alpha: float,
        std_scale: float = 1.0,
        rob_scale: float = 1.0,
        mixer: MixingNet | None = None,
    ) -> None:
        super().__init__()
        self.standard = standard
        self.robust = robust
        self.mixer = mixer
        self.alpha = alpha
        self.std_scale = std_scale
        self.rob_scale = rob_scale
        self.train(False)

    def train(self, mode: bool = True) -> MixedModule:
        """Train mode reaches only the mixer: the base models stay in eval mode (frozen)."""
        self.training = mode
        self.standard.eval()
        self.robust.eval()
        if self.mixer is not None:
            self.mixer.train(mode)
        return self

    def mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log-probabilities [B, C], alpha [B, 1])`` of the mixture at ``x``."""
        lg = F.log_softmax(self.std_scale * self.standard(x), dim=1)
        lh = F.log_softmax(self.rob_scale * self.robust(x), dim=1)
        if self.mixer is None:
            a = torch.full((x.shape[0], 1), self.alpha, device=lg.device, dtype=lg.dtype)
            log_a = torch.log(a)  # alpha 0: -inf (the robust term drops out exactly)
            log_1a = torch.log1p(-a)
        else:
            gamma = self.mixer(lg, lh)
            a = torch.sigmoid(gamma)
            log_a, log_1a = F.logsigmoid(gamma), F.logsigmoid(-gamma)
        out = torch.logsumexp(torch.stack([log_1a + lg, log_a + lh]), dim=0)
        return out, a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)[0]


@models.register("mixed")
def mixed(
    standard: spec_param("models"),  # type: ignore[valid-type]
    robust: spec_param("models"),  # type: ignore[valid-type]
    alpha: Rate = 0.5,
    mixer: Literal["none", "learned"] = "none",
    hidden: PositiveInt = 32,
    reads: Literal["both", "robust"] = "both",
    std_scale: Positive = 1.0,
    rob_scale: Positive = 1.0,
    init_seed: Seed = 0,
) -> TorchClassifier:
    """Adaptive smoothing (S17): ``log((1 - alpha) softmax(std_scale g(x)) + alpha
    softmax(rob_scale h(x)))`` of the ``standard`` model ``g`` and the ``robust`` model ``h``
    ({name, params} torch models of one input domain and class count). ``mixer: learned`` adds a
    mixing network (``hidden`` units, weights drawn under ``init_seed``, starting at ``alpha``)
    that the ``mixer`` trainer trains (``reads``: both models' log-probabilities, or the robust
    model's only); ``none`` mixes with the fixed ``alpha``. The model keeps
    the standard model as ``undefended`` (the ``transfer`` attack's default source)."""
    if mixer == "learned" and not 0 < alpha < 1:
        raise ConfigError(f"mixed: a learned mixer starts at alpha in (0, 1), got {alpha}")
    g_clf, g = base_module(standard, "model 'mixed' (standard)")
    h_clf, h = base_module(robust, "model 'mixed' (robust)")
    gd, hd = g_clf.domain, h_clf.domain
    if (gd.lo, gd.hi, gd.shape) != (hd.lo, hd.hi, hd.shape):
        raise ConfigError(
            f"mixed: standard and robust models need one input domain, got [{gd.lo}, {gd.hi}] "
            f"{gd.shape} and [{hd.lo}, {hd.hi}] {hd.shape}"
        )
    if g_clf.num_classes != h_clf.num_classes:
        raise ConfigError(
            f"mixed: standard model has {g_clf.num_classes} classes, robust {h_clf.num_classes}"
        )
    net = None
    if mixer == "learned":
        with seeded(init_seed):
            net = MixingNet(g_clf.num_classes, hidden, alpha, reads)
    module = MixedModule(g, h, alpha, std_scale, rob_scale, net)
    out = TorchClassifier(module, g_clf.num_classes, gd, name="mixed")
    out.undefended = g_clf  # type: ignore[attr-defined]
    return out
