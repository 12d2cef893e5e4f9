"""Weight-space tools: interpolation, weight differences, per-layer norms and sharpness.

One place for every method that works on weights rather than inputs: WiSE-FT interpolation
(Wortsman et al., 2022; S12, Abdollahpour et al.), RiFT's interpolation and module robust
criticality (Zhu et al., 2023; S5, :mod:`robustlab.training.rift`), robust weight signatures
(weight differences, S11, :mod:`robustlab.training.rws`).

States are ``{name: tensor}`` mappings (``module.state_dict()``). A *layer* is the module a tensor
belongs to: its name without the last component (``"features.0.weight"`` -> ``"features.0"``), so
a BatchNorm layer's running statistics go with its affine weights.

Definitions:

- ``interpolate(a, b, alpha)`` = ``(1 - alpha) a + alpha b`` for every floating-point tensor;
  ``alpha = 0`` returns ``a``'s tensors and ``alpha = 1`` ``b``'s bit-exactly; integer tensors
  (BatchNorm's ``num_batches_tracked``) are taken from the nearer end. ``alpha`` may be a mapping
  ``{layer: alpha}`` (layer-wise interpolation; layers not named keep ``a``).
- ``difference(a, b)`` = ``b - a`` per floating-point tensor (a task vector / weight patch);
  ``apply(a, delta, scale)`` = ``a + scale * delta``.
- :func:`sharpness`: the largest increase of the loss when the weights of one group (a layer, or
  all weights) move within a ball of radius ``rho`` times the group's own L2 norm (adaptive /
  relative sharpness, Kwon et al., 2021; RiFT's module robust criticality with rho = 0.1), found by
  ``steps`` projected normalized-gradient ascent steps from zero (deterministic; a lower bound of
  the true maximum). :func:`hessian_top_eigenvalue`: the top eigenvalue of the loss Hessian in a
  group's weights by power iteration with Hessian-vector products (checked against the exact
  Hessian of a small net in tests/test_weightspace.py).

Example::

    from robustlab.training import weightspace as ws
    mid = ws.interpolate(pre.module.state_dict(), ft.module.state_dict(), 0.5)
    ws.delta_norms(pre.module.state_dict(), ft.module.state_dict())  # {layer: ||ft - pre||}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from robustlab.core.errors import ConfigError

State = Mapping[str, torch.Tensor]


def layer_of(name: str) -> str:
    """The layer (module path) a state-dict entry belongs to: ``"head.1.weight"`` -> ``"head.1"``."""
    return name.rsplit(".", 1)[0] if "." in name else name


def layers(state: State) -> list[str]:
    """The layers of ``state`` holding floating-point tensors, in state-dict order."""
    out: dict[str, None] = {}
    for k, v in state.items():
        if torch.is_floating_point(v):
            out.setdefault(layer_of(k), None)
    return list(out)


def check_compatible(
    a: State, b: State, names: tuple[str, str] = ("a", "b"), lead: str | None = None
) -> None:
    """Raise :class:`ConfigError` naming the first tensor that differs in presence, shape or dtype
    between ``a`` and ``b`` (states of different architectures cannot be combined; tensors on the
    ``meta`` device describe an architecture without weights). ``lead`` starts the message."""
    na, nb = names
    lead = lead or f"weights of {na} and {nb} have different architectures"
    for k in list(a) + [k for k in b if k not in a]:
        if k not in a or k not in b:
            has, lacks = (na, nb) if k in a else (nb, na)
            raise ConfigError(
                f"{lead}: first mismatching tensor {k!r} is in {has} but not in {lacks}"
            )
        ta, tb = a[k], b[k]
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            raise ConfigError(
                f"{lead}: first mismatching tensor {k!r} is {tuple(ta.shape)} {ta.dtype} in {na} "
                f"but {tuple(tb.shape)} {tb.dtype} in {nb}"
            )


def _alpha_for(alpha: float | Mapping[str, float], name: str) -> float:
    if isinstance(alpha, Mapping):
        return float(alpha.get(layer_of(name), 0.0))
    return float(alpha)


def _check_alphas(a: State, alpha: float | Mapping[str, float]) -> None:
    values = list(alpha.values()) if isinstance(alpha, Mapping) else [alpha]
    for v in values:
        if not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"interpolation alpha must be a finite number, got {v!r}")
    if isinstance(alpha, Mapping):
        unknown = sorted(set(alpha) - set(layers(a)))
        if unknown:
            raise ConfigError(f"interpolation alphas name unknown layers {unknown}; layers: "
                              f"{layers(a)}")  # fmt: skip


def interpolate(a: State, b: State, alpha: float | Mapping[str, float]) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` per floating-point tensor (WiSE-FT; Wortsman et al., 2022).

    ``alpha``: one number for all layers, or ``{layer: alpha}`` (layers not named keep ``a``'s
    weights). ``alpha = 0`` gives ``a``'s tensors and ``alpha = 1`` ``b``'s, bit-exactly (clones);
    values outside [0, 1] extrapolate. Integer tensors come from the nearer end (``a`` for
    alpha < 0.5). Different architectures: :class:`ConfigError` naming the first mismatching
    tensor.

    Example::

        net.load_state_dict(interpolate(pre.state_dict(), ft.state_dict(), 0.5))
    """
    check_compatible(a, b)
    _check_alphas(a, alpha)
    out: dict[str, torch.Tensor] = {}
    for k, ta in a.items():
        tb, t = b[k], _alpha_for(alpha, k)
        if not torch.is_floating_point(ta):
            out[k] = (ta if t < 0.5 else tb).detach().clone()
        elif t == 0.0:
            out[k] = ta.detach().clone()
        elif t == 1.0:
            out[k] = tb.detach().clone()
        else:
            out[k] = torch.lerp(ta.detach(), tb.detach().to(ta.device), t)
    return out


def difference(a: State, b: State) -> dict[str, torch.Tensor]:
    """``b - a`` for every floating-point tensor (a task vector / weight patch from ``a`` to
    ``b``); integer tensors are left out. Different architectures: :class:`ConfigError`."""
    check_compatible(a, b)
    return {k: (b[k].detach() - v.detach()) for k, v in a.items() if torch.is_floating_point(v)}


def apply(state: State, delta: State, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``state + scale * delta`` for the tensors in ``delta`` (others cloned unchanged). A
    ``delta`` tensor missing from ``state`` or of another shape: :class:`ConfigError`."""
    out = {k: v.detach().clone() for k, v in state.items()}
    for k, d in delta.items():
        if k not in state or state[k].shape != d.shape:
            got = "missing" if k not in state else tuple(state[k].shape)
            raise ConfigError(
                f"weight patch tensor {k!r} {tuple(d.shape)} does not fit the weights ({got})"
            )
        out[k] = state[k].detach() + scale * d.to(state[k].device, state[k].dtype)
    return out


def norms(state: State) -> dict[str, float]:
    """The L2 norm of each layer's floating-point tensors together."""
    sq: dict[str, float] = {}
    for k, v in state.items():
        if torch.is_floating_point(v):
            sq[layer_of(k)] = sq.get(layer_of(k), 0.0) + float(v.detach().double().pow(2).sum())
    return {k: math.sqrt(s) for k, s in sq.items()}


def delta_norms(a: State, b: State, relative: bool = False) -> dict[str, float]:
    """Per layer ``||b - a||_2`` (over the layer's floating-point tensors, running statistics
    included); with ``relative``, divided by ``||a||_2`` (0 where ``a``'s layer is all zero)."""
    d = norms(difference(a, b))
    if not relative:
        return d
    base = norms(a)
    return {k: (v / base[k] if base[k] > 0 else 0.0) for k, v in d.items()}


# sharpness -----------------------------------------------------------------------------------
Loss = Callable[[], torch.Tensor]


def parameter_groups(module: nn.Module, per_layer: bool = True) -> dict[str, list[nn.Parameter]]:
    """The module's parameters grouped by layer (``{layer: [params]}``), or all in one group
    ``{"all": [...]}`` with ``per_layer=False``. Buffers (running statistics) are not weights to
    perturb."""
    if not per_layer:
        return {"all": [p for p in module.parameters()]}
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        groups.setdefault(layer_of(name), []).append(p)
    return groups


def _flat_norm(ts: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(
        sum((t.detach().double().pow(2).sum() for t in ts), torch.zeros((), dtype=torch.float64))
    )


def sharpness(
    loss: Loss,
    params: list[nn.Parameter],
    rho: float = 0.1,
    steps: int = 5,
) -> float:
    """Relative worst-case sharpness of ``loss`` in ``params``: ``max L(w + d) - L(w)`` over
    ``||d||_2 <= rho * ||w||_2`` (``w``: ``params`` flattened together), by ``steps`` projected
    ascent steps from ``d = 0`` of length ``2 * rho ||w|| / steps`` along the normalized gradient.

    ``loss()`` recomputes the loss (a scalar) with the current weights (fixed data, fixed mode:
    call ``module.eval()`` first for BatchNorm nets). The weights are restored exactly afterwards.
    Returns the best increase seen (>= 0: ``d = 0`` is in the ball). RiFT's module robust
    criticality (Zhu et al., 2023) is this with the adversarial loss and ``rho = 0.1``.
    """
    if not params:
        raise ConfigError("sharpness needs at least one parameter")
    if not (rho >= 0 and math.isfinite(rho)) or steps < 1:
        raise ConfigError(
            f"sharpness: rho must be finite and >= 0 and steps >= 1, got {rho}, {steps}"
        )
    saved = [p.detach().clone() for p in params]
    radius = float(rho * _flat_norm(saved))
    with torch.no_grad():
        base = float(loss())
    best = 0.0
    if radius == 0.0:
        return 0.0
    delta = [torch.zeros_like(p) for p in params]
    lr = 2.0 * radius / steps
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        for _ in range(steps):
            with torch.no_grad():
                for p, w, d in zip(params, saved, delta, strict=True):
                    p.copy_(w + d)
            grads = torch.autograd.grad(loss(), params, allow_unused=True)
            grads = [
                torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
            ]
            gn = float(_flat_norm(grads))
            if gn == 0.0:
                break
            for d, g in zip(delta, grads, strict=True):
                d.add_(g, alpha=lr / gn)
            dn = float(_flat_norm(delta))
            if dn > radius:
                for d in delta:
                    d.mul_(radius / dn)
            with torch.no_grad():
                for p, w, d in zip(params, saved, delta, strict=True):
                    p.copy_(w + d)
                best = max(best, float(loss()) - base)
    finally:
        with torch.no_grad():
            for p, w, f in zip(params, saved, flags, strict=True):
                p.copy_(w)
                p.requires_grad_(f)
    return best


def layer_sharpness(
    module: nn.Module, loss: Loss, rho: float = 0.1, steps: int = 5
) -> dict[str, float]:
    """:func:`sharpness` of each layer's parameters (the others fixed): ``{layer: increase}``."""
    return {name: sharpness(loss, ps, rho, steps) for name, ps in parameter_groups(module).items()}


def hessian_top_eigenvalue(
    loss: Loss, params: list[nn.Parameter], iters: int = 20, seed: int = 0
) -> float:
    """The largest-magnitude eigenvalue of the Hessian of ``loss()`` in ``params`` (flattened
    together), by ``iters`` power iterations with Hessian-vector products (double backward) from a
    seeded random start. Returns the Rayleigh quotient ``v^T H v`` of the last iterate."""
    if not params:
        raise ConfigError("hessian_top_eigenvalue needs at least one parameter")
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g).to(p) for p in params]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        grads = torch.autograd.grad(loss(), params, create_graph=True)
        value = 0.0
        for _ in range(iters):
            n = _flat_norm(v).to(v[0].dtype)
            v = [t / n for t in v]
            hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
            value = float(sum((h * t).sum() for h, t in zip(hv, v, strict=True)))
            v = [h.detach() for h in hv]
        return value
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


def stragglers(per_layer: Mapping[str, float], factor: float = 3.0) -> list[str]:
    """Straggler layers (S12): layers whose sharpness exceeds ``factor`` times the median of all
    layers' sharpness, sharpest first."""
    if not per_layer:
        return []
    vals = sorted(per_layer.values())
    med = (
        vals[len(vals) // 2]
        if len(vals) % 2
        else 0.5 * (vals[len(vals) // 2 - 1] + vals[len(vals) // 2])
    )
    return sorted(
        (k for k, v in per_layer.items() if v > factor * med), key=lambda k: -per_layer[k]
    )


def sparsify(
    a: State, b: State, keep: float, layers: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """``b`` with part of its difference from ``a`` reset: in each of ``layers`` (default all),
    only the largest-magnitude fraction ``keep`` of the entries of ``b - a`` (per tensor) are kept,
    the others set back to ``a``'s values (S12: sparsifying the straggler layers' fine-tuning)."""
    if not 0.0 <= keep <= 1.0:
        raise ConfigError(f"sparsify: keep must be in [0, 1], got {keep}")
    check_compatible(a, b)
    chosen = set(layers) if layers is not None else None
    out = {k: v.detach().clone() for k, v in b.items()}
    for k, va in a.items():
        if not torch.is_floating_point(va) or (chosen is not None and layer_of(k) not in chosen):
            continue
        d = (b[k] - va).detach()
        n = round(keep * d.numel())
        if n >= d.numel():
            continue
        mask = torch.zeros(d.numel(), dtype=torch.bool, device=d.device)
        if n > 0:
            mask[d.abs().reshape(-1).topk(n).indices] = True
        out[k] = torch.where(mask.view_as(d), b[k].detach(), va.detach())
    return out


def module_state(module: nn.Module) -> dict[str, Any]:
    """A detached copy of ``module.state_dict()``."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# WiSE-FT curve -------------------------------------------------------------------------------
def _accuracy(clf: Any, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> float:
    clf.module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            logits = clf.logits(x[i : i + chunk])
            correct += int((logits.argmax(1).cpu() == y[i : i + chunk].cpu()).sum())
    return correct / max(len(x), 1)


def wise_ft_curve(
    a: Any,
    b: Any,
    id_data: tuple[torch.Tensor, torch.Tensor],
    ood_data: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    alphas: Iterable[float] = tuple(i / 10 for i in range(11)),
    layers: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy of the interpolated models ``(1 - alpha) a + alpha b`` (torch adapters of one
    architecture; WiSE-FT, Wortsman et al., 2022) on ``id_data`` and each ``ood_data`` set
    (``{name: (x, y)}``), per alpha: rows ``{"alpha", "id", "ood" (mean over the OOD sets),
    "ood_sets": {name: acc}}``. ``layers``: interpolate only these (others keep ``a``). The
    models are not changed.

    Example::

        curve = wise_ft_curve(pre, ft, (te.x, te.y), {"noise": (x_noisy, te.y)})
        plot_curve(curve, "wise-ft.png")
    """
    import copy

    sa, sb = module_state(a.module), module_state(b.module)
    check_compatible(sa, sb)
    chosen = list(layers) if layers is not None else None
    probe = copy.deepcopy(a)
    rows = []
    for t in alphas:
        weights: float | dict[str, float] = t if chosen is None else dict.fromkeys(chosen, t)
        probe.module.load_state_dict(interpolate(sa, sb, weights))
        sets = {k: _accuracy(probe, x, y) for k, (x, y) in ood_data.items()}
        rows.append({
            "alpha": float(t),
            "id": _accuracy(probe, *id_data),
            "ood": sum(sets.values()) / len(sets) if sets else float("nan"),
            "ood_sets": sets,
        })  # fmt: skip
    return rows


def plot_curve(
    curve: list[dict[str, Any]], path: str | Any, title: str = "WiSE-FT interpolation"
) -> Any:
    """Plot a :func:`wise_ft_curve` (ID and mean OOD accuracy over alpha; WiSE-FT's figure) with
    matplotlib; written to ``path`` (PNG/SVG by suffix). Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    al = [r["alpha"] for r in curve]
    left.plot(al, [r["id"] for r in curve], "o-", label="ID")
    left.plot(al, [r["ood"] for r in curve], "s-", label="OOD (mean)")
    left.set_xlabel("alpha (0: a, 1: b)")
    left.set_ylabel("accuracy")
    left.legend()
    left.set_title(title)
    right.plot([r["id"] for r in curve], [r["ood"] for r in curve], "o-")
    for r in curve:
        right.annotate(f"{r['alpha']:g}", (r["id"], r["ood"]), fontsize=7)
    right.set_xlabel("ID accuracy")
    right.set_ylabel("OOD accuracy")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fig
