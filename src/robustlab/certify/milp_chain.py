"""Reading a torch model as a dense chain of affine maps and ReLUs, for :mod:`robustlab.certify.milp`.

Tjeng, Xiao & Tedrake (ICLR 2019, arXiv:1711.07356) verify networks that are chains
``z_k = W_k h_{k-1} + b_k``, ``h_k = relu(z_k)``. :func:`relu_chain` traces the adapter's module with
``torch.fx`` and evaluates each affine segment between ReLUs (``Linear``, ``Conv``, eval
``BatchNorm``, ``Flatten``, average pooling, the adapter's normalization) in float64 on the zero
vector and the unit basis: ``b = f(0)``, ``W[:, i] = f(e_i) - f(0)``. Anything else (a skip
connection across a ReLU, a product of two input-dependent values, other activations) raises a
:class:`ConfigError` naming the graph node.

Example::

    chain = relu_chain(clf)                    # ReluChain(weights, biases), float64 numpy
    logits, pre = chain.forward(x.flatten().double().numpy())
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from robustlab.certify.ibp import torch_parts, trace
from robustlab.core.errors import ConfigError

_AFFINE_MOD = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm,
               nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.AvgPool1d, nn.AvgPool2d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)  # fmt: skip
_RELU = {torch.relu, nn.functional.relu, "relu"}
_AFFINE_FN = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "size", "dim",
              torch.flatten, torch.reshape, nn.functional.avg_pool2d}  # fmt: skip
_ADD_FN = {operator.add, operator.sub, torch.add, torch.sub, "add", "sub"}
_LINEAR_FN = _ADD_FN | {operator.mul, torch.mul, "mul", operator.truediv, "div"}


@dataclass
class ReluChain:
    """``z_k = W_k h_{k-1} + b_k``, ``h_k = relu(z_k)`` for k < L, logits ``z_L`` (float64 numpy)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]

    def bounds(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Interval bounds of every pre-activation ``z_k`` (and the logits) for inputs in a box
        (``lo``, ``hi``: ``[n]``, or ``[B, n]`` for a batch of boxes, row by row)."""
        out = []
        for w, b in zip(self.weights, self.biases, strict=True):
            c, r = (hi + lo) / 2, (hi - lo) / 2
            zc, zr = c @ w.T + b, r @ np.abs(w).T
            out.append((zc - zr, zc + zr))
            lo, hi = np.maximum(zc - zr, 0), np.maximum(zc + zr, 0)
        return out

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits and pre-activations of the hidden layers for one input (flat float64)."""
        pre = []
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            pre.append(w @ x + b)
            x = np.maximum(pre[-1], 0)
        return self.weights[-1] @ x + self.biases[-1], pre


def relu_chain(model: Any) -> ReluChain:
    """The dense affine/ReLU chain of a white-box torch adapter (normalization folded in).

    Each affine segment between ReLUs is evaluated in float64 on the zero vector and the unit basis:
    ``b = f(0)``, ``W[:, i] = f(e_i) - f(0)``.
    """
    module, mean, std = torch_parts(model, "milp")
    gm = copy.deepcopy(trace(module)).double().eval()
    shape = model.domain.shape
    if shape is None or any(s is None for s in shape):
        raise ConfigError("milp needs a model domain with a fixed per-example shape")
    cur = _basis(int(np.prod(shape)), shape)
    view = (1, -1, *[1] * (len(shape) - 1))
    if mean is not None:  # the adapter's normalization is the first affine map
        cur = cur - mean.double().cpu().view(view)
    if std is not None:
        cur = cur / std.double().cpu().view(view)
    chain = ReluChain([], [])
    env: dict[fx.Node, Any] = {}
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = _Dep(cur, 0)
            elif node.op == "output":
                _close(env[node.args[0]].t, chain)
            else:
                env[node] = _step(gm, node, env, chain)
    return chain


@dataclass
class _Dep:
    """A value that depends on the input: a basis batch, and its affine segment (ReLUs passed)."""

    t: torch.Tensor
    seg: int


def _basis(n: int, shape: Any) -> torch.Tensor:
    return torch.cat([torch.zeros(1, n), torch.eye(n)]).double().view(n + 1, *shape)


def _close(val: torch.Tensor, chain: ReluChain) -> None:
    out = val.flatten(1)
    chain.biases.append(out[0].numpy().copy())
    chain.weights.append((out[1:] - out[0]).T.numpy().copy())


def _step(gm: fx.GraphModule, node: fx.Node, env: dict, chain: ReluChain) -> Any:
    deps = [env[a] for a in node.all_input_nodes if isinstance(env[a], _Dep)]
    args = fx.node.map_arg(node.args, lambda a: env[a].t if isinstance(env[a], _Dep) else env[a])
    kw = fx.node.map_arg(node.kwargs, lambda a: env[a].t if isinstance(env[a], _Dep) else env[a])
    if node.op == "get_attr":
        return _call(gm, node, args, kw)
    if not deps:  # constants (e.g. x.size(0) is computed on the basis batch below)
        return _call(gm, node, args, kw)
    seg = len(chain.weights)
    mod = gm.get_submodule(node.target) if node.op == "call_module" else None
    name = type(mod).__name__ if mod is not None else getattr(node.target, "__name__", node.target)
    if any(d.seg != seg for d in deps):
        raise _unsupported(node, f"a skip connection across a ReLU ({name})")
    if isinstance(mod, nn.ReLU) or (mod is None and node.target in _RELU):
        _close(args[0], chain)
        return _Dep(_basis(chain.weights[-1].shape[0], args[0].shape[1:]), seg + 1)
    affine = isinstance(mod, _AFFINE_MOD) or (mod is None and node.target in _AFFINE_FN)
    if mod is None and node.target in _LINEAR_FN:
        affine = len(deps) == 1 or node.target in _ADD_FN  # dep * dep is not affine
        if node.target in (operator.truediv, "div") and isinstance(env.get(node.args[1]), _Dep):
            affine = False  # c / x is not affine
    if not affine:
        raise _unsupported(node, name)
    out = _call(gm, node, args, kw)
    return (
        _Dep(out, seg)
        if isinstance(out, torch.Tensor) and out.shape[0] == args[0].shape[0]
        else out
    )


def _call(gm: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    if node.op == "get_attr":
        obj: Any = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def _unsupported(node: fx.Node, what: str) -> ConfigError:
    return ConfigError(
        f"milp supports chains of affine layers and ReLUs; got {what} at graph node "
        f"'{node.name}'. Use the 'ibp' or 'smoothing' certifier for this model"
    )
