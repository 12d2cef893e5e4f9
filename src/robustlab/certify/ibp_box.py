"""Boxes and the interval rule of each layer type, for :mod:`robustlab.certify.ibp_graph`.

Gowal et al. (2018, arXiv:1810.12715): affine layers map ``(c, r) -> (W c + b, |W| r)``, monotone
layers map the ends ``[lo, hi]``. A :class:`Box` keeps whichever form the last layer produced; an
affine layer after a monotone one uses ``s = lo + hi`` and ``d = hi - lo`` with the ``1/2`` folded
into cached weights (``W / 2``, ``|W| / 2``), so each layer costs the two affine maps plus two
elementwise passes. Without autograd, weights derived from a module (``|W|``, channels-last copies,
folded BatchNorm) are cached per module and tensor version, and ReLUs run in place on fresh tensors.

Example::

    box = Box.from_bounds(x - eps, x + eps)
    out = module_rule(nn.Linear(64, 10), "fc", None)(box)   # out.lo <= fc(x') <= out.hi
"""

from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustlab.core.errors import ConfigError

SUPPORTED = (
    "Linear, Conv1d/2d/3d, BatchNorm (eval), ReLU/LeakyReLU/ReLU6/Sigmoid/Tanh/ELU/Hardtanh/"
    "Softplus, Flatten/Unflatten/view/reshape, Identity, Dropout (eval), MaxPool, AvgPool, "
    "AdaptiveAvg/MaxPool, additions and subtractions, scalar multiplication, cat"
)
_MONOTONE_MOD = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardtanh,
                 nn.Softplus, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d)  # fmt: skip
_NONNEG_LINEAR_MOD = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                      nn.AdaptiveAvgPool2d)  # fmt: skip
_SHAPE_MOD = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)


class Box:
    """A batch of axis-aligned boxes, kept as ``center +- radius`` and/or ``[lo, hi]``.

    Affine layers use the centre/radius form, monotone layers the end points; each form is computed
    from the other only when needed (and cached), which saves elementwise passes.
    """

    __slots__ = ("_c", "_r", "_lo", "_hi")

    def __init__(self, c: torch.Tensor | None = None, r: torch.Tensor | None = None) -> None:
        self._c, self._r = c, r
        self._lo: torch.Tensor | None = None
        self._hi: torch.Tensor | None = None

    @classmethod
    def from_bounds(cls, lo: torch.Tensor, hi: torch.Tensor) -> Box:
        box = cls()
        box._lo, box._hi = lo, hi
        return box

    @property
    def has_bounds(self) -> bool:
        return self._lo is not None

    @property
    def c(self) -> torch.Tensor:
        if self._c is None:
            self._c = (self._hi + self._lo) * 0.5
        return self._c

    @property
    def r(self) -> torch.Tensor:
        if self._r is None:
            self._r = (self._hi - self._lo) * 0.5
        return self._r

    @property
    def lo(self) -> torch.Tensor:
        if self._lo is None:
            self._lo = self._c - self._r
        return self._lo

    @property
    def hi(self) -> torch.Tensor:
        if self._hi is None:
            self._hi = self._c + self._r
        return self._hi


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def _derived(mod: nn.Module, key: str, make: Any, *others: nn.Module) -> Any:
    """``make()`` (tensors derived from the parameters of ``mod`` and ``others``), cached per
    parameter version when autograd is off (certification); recomputed under autograd (IBP
    training needs the graph)."""
    if torch.is_grad_enabled():
        return make()
    version = tuple(
        (t.data_ptr(), t._version)
        for m in (mod, *others)
        for t in (*m._parameters.values(), *m._buffers.values())
        if t is not None
    )
    slot = _CACHE.setdefault(mod, {})
    hit = slot.get(key)
    if hit is None or hit[0] != version:
        hit = slot[key] = (version, make())
    return hit[1]


def _affine_inputs(b: Box) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(c, r, 1)`` or, from end points, ``(lo + hi, hi - lo, 1/2)`` (the half goes into weights)."""
    if b._c is not None and b._r is not None:
        return b._c, b._r, 1.0
    return b.lo + b.hi, b.hi - b.lo, 0.5


def _weights(mod: Any, half: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(half * W, half * |W|)``, channels-last for 2-D convolutions (keeps activations so)."""

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        w = mod.weight
        if w.dim() == 4:
            w = w.contiguous(memory_format=torch.channels_last)
        return (w * half, w.abs() * half) if half != 1.0 else (w, w.abs())

    return _derived(mod, f"w{half}", make)


def _batchnorm(mod: Any, name: str, node: fx.Node | None, b: Box) -> Box:
    if mod.training or mod.running_var is None:
        raise _unsupported(f"{name} ({type(mod).__name__} in training mode)", node)

    def make() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.rsqrt(mod.running_var + mod.eps)
        if mod.weight is not None:
            scale = scale * mod.weight
        shape = (1, -1, *([1] * (b.c.dim() - 2)))
        shift = -mod.running_mean * scale + (mod.bias if mod.bias is not None else 0.0)
        return scale.view(shape), shift.view(shape), scale.abs().view(shape)

    scale, shift, scale_abs = _derived(mod, f"bn{b.c.dim()}", make)
    if torch.is_grad_enabled():
        return Box(b.c * scale + shift, b.r * scale_abs)
    return Box((b.c * scale).add_(shift), b.r * scale_abs)  # keeps the box's memory format


def _linear(mod: Any, b: Box) -> Box:
    c, r, half = _affine_inputs(b)
    w, wabs = _weights(mod, half)
    return Box(F.linear(c, w, mod.bias), F.linear(r, wabs))


def _conv(mod: Any, b: Box) -> Box:
    c, r, half = _affine_inputs(b)
    w, wabs = _weights(mod, half)
    return Box(mod._conv_forward(c, w, mod.bias), mod._conv_forward(r, wabs, None))


def _conv_bn(conv: Any, bn: Any, name: str, node: fx.Node | None, b: Box) -> Box:
    """A convolution followed by an eval BatchNorm, folded into one affine map (cached)."""
    if torch.is_grad_enabled() or bn.training or bn.running_var is None:
        return _batchnorm(bn, name, node, _conv(conv, b))
    c, r, half = _affine_inputs(b)

    def make() -> tuple[torch.Tensor, ...]:
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        shift = (bias - bn.running_mean) * scale + (bn.bias if bn.bias is not None else 0.0)
        w = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        if w.dim() == 4:
            w = w.contiguous(memory_format=torch.channels_last)
        return w * half, w.abs() * half, shift

    w, wabs, shift = _derived(conv, f"conv-bn{half}", make, bn)
    return Box(conv._conv_forward(c, w, shift), conv._conv_forward(r, wabs, None))


def fused_rules(mod: nn.Module, nxt: nn.Module, name: str, node: fx.Node) -> Any:
    """Rules ``(first, second)`` for a pair of layers where only the second uses the first, or None
    (``name``/``node``: the second layer's, for errors). Conv -> BatchNorm is one affine map; ReLU ->
    MaxPool runs as MaxPool -> ReLU (both monotone, they commute): the ReLU sees the pooled tensor."""
    if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d) and isinstance(
        nxt, nn.modules.batchnorm._BatchNorm
    ):
        return (lambda b: _conv_bn(mod, nxt, name, node, b)), (lambda b: b)
    if type(mod) is nn.ReLU and isinstance(nxt, nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d):
        return (lambda b: b), (lambda b: _relu(_monotone(nxt, b)))
    return None


def module_rule(mod: nn.Module, name: str, node: fx.Node | None) -> Any:
    """The interval rule ``Box -> Box`` of module ``mod`` (chosen once per traced graph)."""
    if isinstance(mod, nn.Linear):
        return lambda b: _linear(mod, b)
    if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return lambda b: _conv(mod, b)
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return lambda b: _batchnorm(mod, name, node, b)
    if isinstance(mod, nn.Dropout):

        def dropout(b: Box) -> Box:
            if mod.training:
                raise _unsupported(f"{name} (Dropout in training mode)", node)
            return b

        return dropout
    if isinstance(mod, _SHAPE_MOD + _NONNEG_LINEAR_MOD):
        return lambda b: _each(mod, b)
    if isinstance(mod, nn.LeakyReLU) and mod.negative_slope < 0:
        raise _unsupported(f"{name} (LeakyReLU with negative slope)", node)
    if type(mod) is nn.ReLU:
        return _relu
    if isinstance(mod, _MONOTONE_MOD):
        return lambda b: _monotone(mod, b)
    raise _unsupported(f"{name} ({type(mod).__name__})", node)


def _relu(b: Box) -> Box:
    """ReLU of a box; from centre/radius form without autograd, in place on the fresh end points."""
    if b.has_bounds or torch.is_grad_enabled():
        return Box.from_bounds(torch.relu(b.lo), torch.relu(b.hi))
    return Box.from_bounds((b.c - b.r).clamp_min_(0), (b.c + b.r).clamp_min_(0))


def _each(f: Any, b: Box) -> Box:
    """A shape op or a linear map with non-negative weights: apply it to the form at hand."""
    return Box.from_bounds(f(b.lo), f(b.hi)) if b.has_bounds else Box(f(b.c), f(b.r))


def _monotone(f: Any, b: Box) -> Box:
    return Box.from_bounds(f(b.lo), f(b.hi))


def _arith(op: Any, a: Any, b: Any) -> Box:
    if op is operator.mul:
        if isinstance(a, Box) and isinstance(b, Box):
            raise _unsupported("product of two bounded tensors", None)
        box, k = (a, b) if isinstance(a, Box) else (b, a)
        k = torch.as_tensor(k, dtype=box.c.dtype, device=box.c.device)
        return Box(box.c * k, box.r * k.abs())
    ca, ra = (a.c, a.r) if isinstance(a, Box) else (a, 0.0)
    cb, rb = (b.c, b.r) if isinstance(b, Box) else (b, 0.0)
    r = ra + rb
    c = op(ca, cb)
    return Box(c, r if isinstance(r, torch.Tensor) else torch.zeros_like(c) + r)


def _unsupported(what: str, node: fx.Node | None) -> ConfigError:
    where = f" at graph node '{node.name}'" if node is not None else ""
    return ConfigError(
        f"ibp does not support {what}{where}; supported: {SUPPORTED}. "
        "Use the 'smoothing' certifier for this model"
    )
