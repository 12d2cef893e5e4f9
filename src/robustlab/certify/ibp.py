"""Interval bound propagation (Gowal et al., "On the Effectiveness of Interval Bound Propagation for
Training Verifiably Robust Models", 2018, arXiv:1810.12715).

Threat model: the Linf ball of radius ``eps`` around each input, intersected with the model's input
domain. The box is pushed through the network as ``center +- radius``: affine layers map
``(c, r) -> (W c + b, |W| r)``, monotone activations and max-pooling map the ends ``(lo, hi)``,
additions add centers and radii. The result contains every logit vector reachable from the box.

The network is read with ``torch.fx`` symbolic tracing (:mod:`robustlab.certify.ibp_graph`), so
residual connections (``x + f(x)``) and any graph of the supported operations work; the adapter's
``mean``/``std`` normalization comes first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustlab.certify.base import check_certify_inputs, require_int, require_positive
from robustlab.certify.ibp_graph import SUPPORTED, Box, propagate, trace
from robustlab.core.errors import CapabilityError
from robustlab.core.registry import certifiers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Certificate

__all__ = ["SUPPORTED", "Box", "IntervalBounds", "input_box", "interval_bounds", "margin_bounds",
           "normalize", "propagate", "spec_margins", "torch_parts", "trace"]  # fmt: skip


def torch_parts(model: Any, who: str = "ibp") -> tuple[nn.Module, Any, Any]:
    """``(module, mean, std)`` of a white-box torch adapter, or a clear error for other models."""
    module = getattr(model, "module", None)
    if not isinstance(module, nn.Module) or not getattr(model.capabilities, "grad", False):
        raise CapabilityError(
            f"{who} needs a white-box torch model (TorchClassifier with gradients); "
            f"{type(model).__name__} has no torch module: use the 'smoothing' certifier instead"
        )
    return module, getattr(model, "mean", None), getattr(model, "std", None)


def input_box(model: Any, x: torch.Tensor, eps: float) -> Box:
    """The Linf ball of radius ``eps`` around ``x``, clipped to ``model.domain`` (raw input space)."""
    d = model.domain
    return Box.from_bounds((x - eps).clamp(min=d.lo), (x + eps).clamp(max=d.hi))


def normalize(box: Box, mean: Any, std: Any) -> Box:
    """The adapter's per-channel ``(x - mean) / std``, applied to a box (an affine map)."""
    c, r = box.c, box.r
    shape = (1, -1, *([1] * (c.dim() - 2)))
    if mean is not None:
        c = c - mean.to(c).view(shape)
    if std is not None:
        s = std.to(c).view(shape)
        c, r = c / s, r / s.abs()
    return Box(c, r)


def interval_bounds(model: Any, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds ``[B, K]`` on the logits of ``model`` over the Linf ball ∩ domain."""
    module, mean, std = torch_parts(model)
    x = x.to(model.device) if hasattr(model, "device") else x
    with torch.no_grad():
        out = propagate(module, normalize(input_box(model, x, eps), mean, std))
    return out.lo, out.hi


def margin_bounds(model: Any, x: torch.Tensor, eps: float, c: torch.Tensor) -> torch.Tensor:
    """Lower bounds ``[B, K]`` on ``logit_c - logit_j`` over the ball (0 at ``j = c``).

    The difference is folded into the last ``Linear`` layer when there is one (tighter than
    subtracting logit bounds), as in Gowal et al.'s elision of the final specification layer.
    """
    module, mean, std = torch_parts(model)
    x = x.to(model.device) if hasattr(model, "device") else x
    with torch.no_grad():
        box = normalize(input_box(model, x, eps), mean, std)
        return spec_margins(module, box, c.to(x.device))


def spec_margins(module: nn.Module, box: Box, c: torch.Tensor) -> torch.Tensor:
    """:func:`margin_bounds` for a raw module and a normalized input box (differentiable)."""
    out = propagate(module, box, elide_last=True)
    if isinstance(out, Box):
        lb = out.c.gather(1, c[:, None]) - out.r.gather(1, c[:, None]) - out.hi
        return lb.scatter(1, c[:, None], 0.0)
    h, last = out
    w = last.weight[c][:, None, :] - last.weight[None, :, :]  # [B, K, H]
    bias = 0.0 if last.bias is None else last.bias[c][:, None] - last.bias[None, :]
    lb = torch.einsum("bkh,bh->bk", w, h.c) - torch.einsum("bkh,bh->bk", w.abs(), h.r)
    return (lb + bias).scatter(1, c[:, None], 0.0)


@certifiers.register("ibp")
class IntervalBounds:
    """Certify Linf robustness at ``eps`` by interval bound propagation (Gowal et al., 2018).

    Threat model: Linf ball of radius ``eps`` ∩ the input domain (``norm="inf"``). The prediction
    is the model's argmax; it is certified (radius ``eps``) when the IBP lower bound of
    ``logit_pred - logit_j`` is positive for every other class ``j``, else the radius is 0. Sound
    and deterministic (float arithmetic, no outward rounding); needs a white-box torch model.

    Example::

        cert = IntervalBounds(eps=0.05).certify(clf, x, y, rng=ExampleRNG.from_seed(0, ids))
        certified_acc = ((cert.pred == y) & (cert.radius >= 0.05)).float().mean()
    """

    norm = "inf"

    def __init__(self, eps: float = 0.1, batch_size: int = 512) -> None:
        self.eps = eps
        self.batch_size = batch_size

    def validate(self) -> None:
        require_positive("ibp", eps=self.eps)
        require_int("ibp", 1, batch_size=self.batch_size)

    def certify(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, *, rng: ExampleRNG
    ) -> Certificate:
        """Certify each example of ``x``; ``y`` and ``rng`` are not used (deterministic)."""
        self.validate()
        torch_parts(model)
        check_certify_inputs(model, x, y, "ibp")
        preds, margins = [], []
        with torch.no_grad():
            for xb in x.split(self.batch_size):
                pred = model.logits(xb).argmax(dim=1)
                lb = margin_bounds(model, xb, self.eps, pred)
                margins.append(lb.scatter(1, pred[:, None], float("inf")).amin(dim=1))
                preds.append(pred)
        pred, margin = torch.cat(preds).to(x.device), torch.cat(margins).to(x.device)
        ok = margin > 0
        return Certificate(
            pred=pred,
            radius=torch.where(ok, self.eps, 0.0).to(x.dtype),
            norm=self.norm,
            abstained=torch.zeros_like(ok),
            extra={"margin_lb": margin},
        )
