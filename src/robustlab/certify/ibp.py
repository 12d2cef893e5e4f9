"""Interval bound propagation (Gowal et al., "On the Effectiveness of Interval Bound Propagation for
Training Verifiably Robust Models", 2018, arXiv:1810.12715).

Threat model: the Linf ball of radius ``eps`` around each input, intersected with the model's input
domain. The box is pushed through the network as ``center +- radius``: affine layers map
``(c, r) -> (W c + b, |W| r)``, monotone activations and max-pooling map the ends ``(lo, hi)``,
additions add centers and radii. The result contains every logit vector reachable from the box.

The network is read with ``torch.fx`` symbolic tracing, so residual connections (``x + f(x)``) and
any graph of the supported operations work; the adapter's ``mean``/``std`` normalization comes first.
"""

from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustlab.certify.base import check_certify_inputs, require_int, require_positive
from robustlab.core.errors import CapabilityError, ConfigError
from robustlab.core.registry import certifiers
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Certificate

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
_MONOTONE_FN = {torch.relu, F.relu, torch.sigmoid, torch.tanh, F.leaky_relu, F.max_pool2d,
                F.max_pool1d, F.adaptive_max_pool2d, F.elu, F.softplus, F.hardtanh}  # fmt: skip
_NONNEG_LINEAR_FN = {F.avg_pool2d, F.avg_pool1d, F.adaptive_avg_pool2d}
_SHAPE_FN = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.getitem}
_MONOTONE_METHODS = {"relu", "sigmoid", "tanh"}
_SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose",
                  "contiguous", "view_as", "reshape_as"}  # fmt: skip
_TRACED: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule] = weakref.WeakKeyDictionary()


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


def trace(module: nn.Module) -> fx.GraphModule:
    """``torch.fx`` graph of ``module`` (cached per module object; parameters stay shared)."""
    gm = _TRACED.get(module)
    if gm is None:
        try:
            gm = fx.symbolic_trace(module)
        except Exception as e:  # data-dependent control flow and the like
            raise ConfigError(
                f"ibp cannot trace {type(module).__name__} with torch.fx ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]}); use the 'smoothing' certifier instead"
            ) from e
        _TRACED[module] = gm
    return gm


def propagate(module: nn.Module, box: Box, *, elide_last: bool = False) -> Any:
    """Push ``box`` (already normalized) through ``module``; return the output :class:`Box`.

    With ``elide_last``, if the output is a ``Linear`` layer, return ``(box_before, linear)`` so a
    specification (e.g. logit differences) can be folded into it (Gowal et al., Section 3).
    """
    gm = trace(module)
    if box.c.dim() == 4:  # channels-last: CPU pooling on small feature maps is ~8x faster
        cl = torch.channels_last
        box = Box(box.c.contiguous(memory_format=cl), box.r.contiguous(memory_format=cl))
    env: dict[fx.Node, Any] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = box
        elif node.op == "get_attr":
            env[node] = _attr(gm, node.target)
        elif node.op == "output":
            (src,) = node.args
            if elide_last and src.op == "call_module":
                last = gm.get_submodule(src.target)
                inp = env[src.args[0]]
                if isinstance(last, nn.Linear) and isinstance(inp, Box):
                    return inp, last
            return env[src]
        else:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = _apply(gm, node, args, kwargs)
    raise ConfigError("ibp: traced graph has no output")  # pragma: no cover


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _apply(gm: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    boxes = [a for a in args if isinstance(a, Box)]
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return _module(mod, node.target, args[0], node)
    fn = node.target
    if not boxes:  # constant computation (e.g. x.size(0) on a center)
        if node.op == "call_method":
            return getattr(args[0], fn)(*args[1:], **kwargs)
        return fn(*args, **kwargs)
    if node.op == "call_method":
        if fn in _SHAPE_METHODS:  # view -> reshape: the box may be channels-last
            m = {"view": "reshape", "view_as": "reshape_as"}.get(fn, fn)
            return _each(lambda t: getattr(t, m)(*args[1:], **kwargs), args[0])
        if fn in _MONOTONE_METHODS:
            return _monotone(lambda t: getattr(t, fn)(*args[1:], **kwargs), args[0])
        if fn in ("size", "dim"):
            return getattr(args[0].c, fn)(*args[1:], **kwargs)
        if fn in ("add", "sub", "mul"):
            return _arith(getattr(operator, fn), args[0], args[1])
    elif fn in _SHAPE_FN and isinstance(args[0], Box) and len(boxes) == 1:
        return _each(lambda t: fn(t, *args[1:], **kwargs), args[0])
    elif fn in _MONOTONE_FN and isinstance(args[0], Box) and len(boxes) == 1:
        return _monotone(lambda t: fn(t, *args[1:], **kwargs), args[0])
    elif fn in _NONNEG_LINEAR_FN and isinstance(args[0], Box) and len(boxes) == 1:
        return _each(lambda t: fn(t, *args[1:], **kwargs), args[0])
    elif fn in (operator.add, torch.add, operator.sub, torch.sub, operator.mul, torch.mul):
        op = {torch.add: operator.add, torch.sub: operator.sub, torch.mul: operator.mul}.get(fn, fn)
        return _arith(op, args[0], args[1])
    elif fn is torch.cat and all(isinstance(a, Box) for a in args[0]):
        return Box(torch.cat([a.c for a in args[0]], *args[1:], **kwargs),
                   torch.cat([a.r for a in args[0]], *args[1:], **kwargs))  # fmt: skip
    raise _unsupported(f"{node.op} {getattr(fn, '__name__', fn)}", node)


def _module(mod: nn.Module, name: str, b: Any, node: fx.Node) -> Box:
    if isinstance(mod, nn.Linear):
        return Box(F.linear(b.c, mod.weight, mod.bias), F.linear(b.r, mod.weight.abs()))
    if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        w = mod.weight
        if w.dim() == 4:  # channels-last weights keep the activations channels-last (faster)
            w = w.contiguous(memory_format=torch.channels_last)
        return Box(mod._conv_forward(b.c, w, mod.bias), mod._conv_forward(b.r, w.abs(), None))
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        if mod.training or mod.running_var is None:
            raise _unsupported(f"{name} ({type(mod).__name__} in training mode)", node)
        scale = torch.rsqrt(mod.running_var + mod.eps)
        if mod.weight is not None:
            scale = scale * mod.weight
        shift = -mod.running_mean * scale + (mod.bias if mod.bias is not None else 0.0)
        shape = (1, -1, *([1] * (b.c.dim() - 2)))
        return Box(b.c * scale.view(shape) + shift.view(shape), b.r * scale.abs().view(shape))
    if isinstance(mod, _SHAPE_MOD + _NONNEG_LINEAR_MOD):
        if isinstance(mod, nn.Dropout) and mod.training:
            raise _unsupported(f"{name} (Dropout in training mode)", node)
        return _each(mod, b)
    if isinstance(mod, nn.LeakyReLU) and mod.negative_slope < 0:
        raise _unsupported(f"{name} (LeakyReLU with negative slope)", node)
    if isinstance(mod, _MONOTONE_MOD):
        return _monotone(mod, b)
    raise _unsupported(f"{name} ({type(mod).__name__})", node)


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
