"""Robust Weight Signatures (S11): corruption robustness as a removable weight patch.

Cai et al., "Robust Weight Signatures: Gaining Robustness as Easy as Patching Weights?" (ICML
2023). Two models of one architecture fine-tuned from one initialisation -- one on clean data
(``standard``), one on a corruption (the ``augment`` trainer) -- differ by a weight difference, the
robust weight signature (RWS). Adding it to the clean model ("patching") gives it the robustness;
it can be restricted to the first ``k`` layers (where the paper finds it concentrates), quantized,
scaled by a coefficient, composed with other patches, applied and removed again.

What this module provides:

- :func:`layer_differences`: per-layer relative difference ``||robust - clean|| / ||clean||``
  (from :func:`robustlab.training.weightspace.delta_norms`) and :func:`plot_layers` (a bar chart);
- :func:`extract` -> :class:`Patch`: the difference of every floating-point tensor (BatchNorm
  running statistics included), optionally only of the first ``layers`` layers, optionally
  quantized per tensor (``bits`` 8 or 4: symmetric codes with one float scale per tensor; int4
  codes packed two per byte; BatchNorm running statistics stay float), with metadata: the architecture (names, shapes, dtypes of every
  floating-point tensor and their hash), the corruption it was trained on, the quantization;
- :meth:`Patch.save` / :meth:`Patch.load`: a plain ``torch.save`` of tensors, strings and numbers
  (loaded with ``weights_only=True``);
- :func:`apply`: add ``sum_i scale_i * patch_i`` to a model's weights in place and return an
  :class:`Applied` handle whose :meth:`~Applied.remove` restores the weights **bit-exactly**: it
  keeps the XOR of the integer bit patterns of every touched tensor before and after (floating-
  point ``w + d - d`` is not ``w`` in general). BatchNorm running variances are clamped at 0 after
  patching (a scaled patch could make them negative);
- a patch for another architecture is refused with a :class:`ConfigError` naming the first tensor
  whose name, shape or dtype differs.

The model ``patched`` (:mod:`robustlab.models.patched`) applies patches to any base model spec, so
a suite can evaluate patched models. Measured numbers and the transfer experiment:
docs/weight-patches.md.

Example::

    from robustlab.training import rws
    patch = rws.extract(clean, robust, layers=3, bits=8, corruption="gaussian_blur")
    patch.save("blur.rws.pt")
    with rws.apply(clean, [rws.Patch.load("blur.rws.pt")], scales=[1.0]):
        ...  # clean is patched here
    # clean's weights are bit-identical to before here
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustlab.core.errors import ConfigError
from robustlab.models.base import hash_tensors
from robustlab.training import weightspace as ws

FORMAT = "robustlab-rws"
VERSION = 1
_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _state(model: Any) -> dict[str, torch.Tensor]:
    """The state dict of a model adapter (``.module``), a module, or a state mapping."""
    if isinstance(model, Mapping):
        return dict(model)
    module = getattr(model, "module", model)
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"weight patches need a torch model, a module or a state dict; got {type(model).__name__}"
        )
    return module.state_dict()


def architecture(model: Any) -> list[list[Any]]:
    """``[[name, shape, dtype], ...]`` of the model's floating-point tensors, in state order."""
    return [
        [k, list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in _state(model).items()
        if torch.is_floating_point(v)
    ]


def architecture_hash(arch: Sequence[Sequence[Any]]) -> str:
    """A hash of an :func:`architecture` listing (names, shapes, dtypes)."""
    return hash_tensors([], repr([list(map(str, a)) for a in arch]))


def check_architecture(arch: Sequence[Sequence[Any]], model: Any, what: str = "patch") -> None:
    """Raise :class:`ConfigError` naming the first tensor where ``model`` differs from ``arch``
    (the architecture a patch was extracted from): a missing or extra tensor, another shape
    (:func:`~robustlab.training.weightspace.check_compatible` on the architecture as meta tensors)."""
    want = {a[0]: torch.empty(a[1], dtype=getattr(torch, a[2]), device="meta") for a in arch}
    have = {k: v for k, v in _state(model).items() if torch.is_floating_point(v)}
    lead = (f"{what} is for another architecture (a patch only fits models of the architecture "
            "it was extracted from)")  # fmt: skip
    ws.check_compatible(want, have, ("the patch's architecture", "the model"), lead)


@dataclass
class Patch:
    """A robust weight signature: per-tensor weight differences and their metadata.

    ``tensors``: ``{name: delta}`` (float) or, quantized, ``{name: codes}`` (int8, or uint8 with
    two int4 codes per byte) with ``scales[name]`` the float step of the codes (tensors without a
    scale are float: BatchNorm statistics stay float in a quantized patch); ``meta``: ``arch``
    (see :func:`architecture`), ``arch_hash``, ``bits`` (None, 8 or 4), ``layers`` (the layers
    included), ``corruption`` and anything else given to :func:`extract`.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def bits(self) -> int | None:
        return self.meta.get("bits")

    @property
    def layers(self) -> list[str]:
        return list(self.meta.get("layers", []))

    def delta(self) -> dict[str, torch.Tensor]:
        """The (dequantized) float differences ``{name: tensor}``."""
        shapes = {a[0]: a[1] for a in self.meta["arch"]}
        out = {}
        for k, t in self.tensors.items():
            if k not in self.scales:  # stored as floats (unquantized patch, BatchNorm statistics)
                out[k] = t.float() if t.dtype != torch.float64 else t
                continue
            q = _unpack4(t, math.prod(shapes[k])) if self.bits == 4 else t.to(torch.int32)
            out[k] = (q.float() * self.scales[k]).reshape(shapes[k])
        return out

    def nbytes(self) -> int:
        """Bytes of the stored tensors and scales (metadata aside)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values()) + 4 * len(
            self.scales
        )

    def save(self, path: str | Path) -> Path:
        """Write the patch as a plain tensor file (``torch.save``; load with :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"format": FORMAT, "version": VERSION, "meta": self.meta,
             "tensors": {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()},
             "scales": dict(self.scales)},
            path,
        )  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path) -> Patch:
        """Read a patch written by :meth:`save` (``weights_only=True``: no code is unpickled)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"weight patch file {str(path)!r} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"{str(path)!r} is not a readable weight patch file: {e}") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ConfigError(f"{str(path)!r} is not a robustlab weight patch ({FORMAT!r} file)")
        if obj.get("version") != VERSION:
            raise ConfigError(
                f"{str(path)!r} is a version {obj.get('version')} weight patch; this robustlab "
                f"reads version {VERSION}"
            )
        return cls(dict(obj["tensors"]), dict(obj["meta"]), dict(obj.get("scales", {})))


def layer_differences(clean: Any, robust: Any) -> dict[str, float]:
    """Per layer ``||robust - clean||_2 / ||clean||_2`` over the layer's floating-point tensors
    (:func:`robustlab.training.weightspace.delta_norms` with ``relative=True``), in layer order.
    Different architectures: :class:`ConfigError` naming the first mismatching tensor."""
    return ws.delta_norms(_state(clean), _state(robust), relative=True)


def extract(
    clean: Any,
    robust: Any,
    *,
    layers: int | Sequence[str] | None = None,
    bits: int | None = None,
    corruption: str | None = None,
    **meta: Any,
) -> Patch:
    """The patch ``robust - clean`` (two models of one architecture, e.g. fine-tuned from one
    initialisation on clean and on corrupted data).

    ``layers``: None (all), the number of leading layers to keep (state order; a BatchNorm
    layer's running statistics count with it), or layer names; ``bits``: None (float32), 8 or 4
    (per-tensor symmetric quantization); ``corruption`` and ``meta``: stored in the metadata
    (JSON-able values).
    """
    a, b = _state(clean), _state(robust)
    diff = ws.difference(a, b)  # refuses two architectures, naming the first mismatching tensor
    order = ws.layers(a)
    if layers is None:
        keep = order
    elif isinstance(layers, int) and not isinstance(layers, bool):
        if not 1 <= layers <= len(order):
            raise ConfigError(f"layers must be 1..{len(order)} (the model's layers), got {layers}")
        keep = order[:layers]
    else:
        unknown = [n for n in layers if n not in order]
        if unknown:
            raise ConfigError(f"unknown layers {unknown}; the model's layers: {order}")
        keep = [n for n in order if n in set(layers)]
    arch = architecture(a)
    info = {
        "arch": arch, "arch_hash": architecture_hash(arch), "bits": None, "layers": keep,
        "corruption": corruption, **meta,
    }  # fmt: skip
    deltas = {k: d.float() for k, d in diff.items() if ws.layer_of(k) in set(keep)}
    patch = Patch(deltas, info)
    return quantize(patch, bits) if bits is not None else patch


def quantize(patch: Patch, bits: int) -> Patch:
    """``patch`` with per-tensor symmetric ``bits``-bit codes (8 or 4): ``step = max|d| /
    (2^(bits-1) - 1)``, ``codes = round(d / step)``; int4 codes are packed two per byte. The
    error per element is at most ``step / 2``. BatchNorm running statistics (``running_mean``,
    ``running_var``: two numbers per channel) stay float32: a rounded variance delta can push a
    small variance below zero."""
    if bits not in (4, 8):
        raise ConfigError(f"bits must be 4 or 8 (or None for float32), got {bits!r}")
    if patch.bits is not None:
        raise ConfigError(f"the patch is already quantized to {patch.bits} bits")
    qmax = 2 ** (bits - 1) - 1
    codes, scales = {}, {}
    for k, d in patch.tensors.items():
        d = d.detach().float()
        if k.endswith(_STATS):
            codes[k] = d
            continue
        top = float(d.abs().max()) if d.numel() else 0.0
        step = top / qmax if top > 0 else 1.0
        q = torch.round(d / step).clamp_(-qmax, qmax).to(torch.int8).flatten()
        codes[k], scales[k] = (_pack4(q) if bits == 4 else q), step
    return Patch(codes, {**patch.meta, "bits": bits}, scales)


_STATS = ("running_mean", "running_var")


def _pack4(q: torch.Tensor) -> torch.Tensor:
    u = (q.to(torch.int16) + 8).to(torch.uint8)  # -7..7 -> 1..15
    if len(u) % 2:
        u = torch.cat([u, torch.full((1,), 8, dtype=torch.uint8)])
    return u[0::2] | (u[1::2] << 4)


def _unpack4(packed: torch.Tensor, n: int) -> torch.Tensor:
    lo, hi = (packed & 15).to(torch.int32) - 8, (packed >> 4).to(torch.int32) - 8
    return torch.stack([lo, hi], dim=1).flatten()[:n]


class Applied:
    """Patches applied to a model's weights in place; :meth:`remove` restores them bit-exactly.

    Keeps, per touched tensor, the XOR of its bit patterns before and after patching; removal
    XORs it back (refused if the weights changed since: then the XOR would not restore them).
    Also a context manager (removal on exit).
    """

    def __init__(self, model: Any, xor: dict[str, torch.Tensor], after: str) -> None:
        self.model = model
        self._xor = xor
        self._after = after
        self.removed = False

    def remove(self) -> None:
        """Restore the weights as they were before :func:`apply`, bit for bit."""
        if self.removed:
            raise ConfigError("these patches were already removed")
        state = _state(self.model)
        if _digest(state, self._xor) != self._after:
            raise ConfigError(
                "the patched weights changed after the patches were applied (trained or patched "
                "again?): removing would not restore the original weights"
            )
        with torch.no_grad():
            for k, x in self._xor.items():
                _bits(state[k]).bitwise_xor_(x.to(state[k].device))
        self.removed = True

    def __enter__(self) -> Applied:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.removed:
            self.remove()


def apply(model: Any, patches: Sequence[Patch], scales: Sequence[float] | None = None) -> Applied:
    """Add ``sum_i scales[i] * patches[i]`` to ``model``'s weights in place (``scales`` default
    1 each); returns the :class:`Applied` handle that removes them bit-exactly.

    Each patch must come from the model's architecture (else :class:`ConfigError` naming the first
    mismatching tensor). BatchNorm running variances are clamped at 0 after patching.
    """
    patches = list(patches)
    if not patches:
        raise ConfigError("no patches to apply")
    scales = [1.0] * len(patches) if scales is None else [float(s) for s in scales]
    if len(scales) != len(patches):
        raise ConfigError(f"{len(scales)} scales for {len(patches)} patches: give one per patch")
    for s in scales:
        if not math.isfinite(s):
            raise ConfigError(f"patch scales must be finite numbers, got {s}")
    for i, p in enumerate(patches):
        if not isinstance(p, Patch):
            raise ConfigError(f"patch {i} is a {type(p).__name__}, not a Patch (Patch.load(path))")
        check_architecture(p.meta["arch"], model, f"patch {i} ({p.meta.get('corruption')})")
    state = _state(model)
    total: dict[str, torch.Tensor] = {}
    for p, s in zip(patches, scales, strict=True):
        for k, d in p.delta().items():
            d = d.to(state[k].device, torch.float64) * s
            total[k] = total[k] + d if k in total else d
    xor = {}
    with torch.no_grad():
        for k, d in total.items():
            w = state[k]
            before = _bits(w).clone()
            new = (w.double() + d).to(w.dtype)
            if k.endswith("running_var"):
                new.clamp_(min=0)
            w.copy_(new)
            xor[k] = before ^ _bits(w)
    return Applied(model, xor, _digest(state, xor))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's storage viewed as integers of its element size."""
    return t.view(_INT[t.element_size()])


def _digest(state: Mapping[str, torch.Tensor], keys: Mapping[str, Any]) -> str:
    return hash_tensors([state[k] for k in sorted(keys)])


def plot_layers(
    per_layer: Mapping[str, Mapping[str, float]] | Mapping[str, float],
    path: str | Path,
    title: str = "Relative weight difference per layer (robust vs clean)",
) -> Path:
    """A bar chart of per-layer relative differences (one series, or ``{label: {layer: value}}``
    for several, e.g. one per corruption), written to ``path`` (PNG/SVG by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(per_layer.values()), None)
    series = dict(per_layer) if isinstance(first, Mapping) else {"": per_layer}
    names = list(next(iter(series.values())))
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 3))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [values[n] for n in names], width, label=label or None)  # type: ignore[index]
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(names))], names,
                  rotation=30, ha="right")  # fmt: skip
    ax.set_ylabel("||robust - clean|| / ||clean||")
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
