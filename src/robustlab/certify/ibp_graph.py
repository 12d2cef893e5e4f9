"""The interval-bound interpreter behind :mod:`robustlab.certify.ibp`: boxes through ``torch.fx`` graphs.

Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
Models" (2018, arXiv:1810.12715). A :class:`Box` holds ``center +- radius`` and/or ``[lo, hi]``;
affine layers map ``(c, r) -> (W c + b, |W| r)``, monotone activations and max-pooling map the
ends, additions add centers and radii. :func:`propagate` walks the traced graph node by node;
unsupported operations raise a :class:`ConfigError` naming the graph node and suggesting smoothing.

Example::

    out = propagate(module, Box.from_bounds(x - eps, x + eps))   # out.lo <= module(x') <= out.hi
"""

from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from robustlab.certify.ibp_box import (
    SUPPORTED,
    Box,
    _arith,
    _each,
    _monotone,
    _unsupported,
    fused_rules,
    module_rule,
)
from robustlab.core.errors import ConfigError

_MONOTONE_FN = {torch.relu, F.relu, torch.sigmoid, torch.tanh, F.leaky_relu, F.max_pool2d,
                F.max_pool1d, F.adaptive_max_pool2d, F.elu, F.softplus, F.hardtanh}  # fmt: skip
_NONNEG_LINEAR_FN = {F.avg_pool2d, F.avg_pool1d, F.adaptive_avg_pool2d}
_SHAPE_FN = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.getitem}
_MONOTONE_METHODS = {"relu", "sigmoid", "tanh"}
_SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose",
                  "contiguous", "view_as", "reshape_as"}  # fmt: skip
_TRACED: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule] = weakref.WeakKeyDictionary()


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
    for node, rule in _plan(gm):
        if node.op == "placeholder":
            env[node] = box
        elif node.op == "get_attr":
            env[node] = _attr(gm, node.target)
        elif node.op == "output":
            src, last = rule
            if elide_last and last is not None and isinstance(env[src.args[0]], Box):
                return env[src.args[0]], last
            return env[src]
        elif rule is not None:  # a module: its rule was chosen when the plan was made
            env[node] = rule(env[node.args[0]])
        else:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = _apply(gm, node, args, kwargs)
    raise ConfigError("ibp: traced graph has no output")  # pragma: no cover


_PLANS: weakref.WeakKeyDictionary[fx.GraphModule, list[tuple[fx.Node, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _plan(gm: fx.GraphModule) -> list[tuple[fx.Node, Any]]:
    """The graph's nodes with, per module node, its interval rule (unsupported layers raise)."""
    plan = _PLANS.get(gm)
    if plan is None:
        nodes = list(gm.graph.nodes)
        mods = {n: gm.get_submodule(n.target) for n in nodes if n.op == "call_module"}
        rules: dict[fx.Node, Any] = {}
        for node in nodes:
            if node in mods and node not in rules:
                users = list(node.users)
                nxt = users[0] if len(users) == 1 and users[0].args[:1] == (node,) else None
                pair = fused_rules(mods[node], mods[nxt], nxt.target, nxt) if nxt in mods else None
                if pair is not None:
                    rules[node], rules[nxt] = pair
                else:
                    rules[node] = module_rule(mods[node], node.target, node)
            elif node.op == "output":
                (src,) = node.args
                last = mods.get(src) if isinstance(src, fx.Node) else None
                rules[node] = (src, last if isinstance(last, nn.Linear) else None)
        plan = _PLANS[gm] = [(node, rules.get(node)) for node in nodes]
    return plan


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _apply(gm: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    boxes = [a for a in args if isinstance(a, Box)]
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


__all__ = ["SUPPORTED", "Box", "propagate", "trace"]
