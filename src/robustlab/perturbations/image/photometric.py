"""Photometric corruptions of ImageNet-C: contrast, brightness, saturate (as ``imagecorruptions``).

Threat model: natural lighting/colour shifts; severities 1-5 index the paper's tables. Grey
(1-channel) images: brightness adds to the grey level (HSV value of a grey pixel), saturate is the
identity (a grey pixel has no saturation to change; the reference's own grey branch does the same).

Example::

    x2 = perturbations.create("contrast")(x, 3, ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.image._ops import Corruption


@perturbations.register("contrast")
class Contrast(Corruption):
    """Scale deviations from each channel's mean by 0.4-0.05 over severities 1-5."""

    contiguous_input = True

    table = ((0.4,), (0.3,), (0.2,), (0.1,), (0.05,))
    identity = (1.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        return x.mul(p[0]).add_(mean * (1 - p[0]))  # (x - mean) p + mean, one full-size pass


@perturbations.register("brightness")
class Brightness(Corruption):
    """Raise the HSV value by 0.1-0.5 over severities 1-5 (hue and saturation kept)."""

    contiguous_input = True

    table = ((0.1,), (0.2,), (0.3,), (0.4,), (0.5,))
    identity = (0.0,)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        if x.shape[1] != 3:
            return x + p[0]
        v = x.amax(dim=1, keepdim=True)
        new_v = (v + p[0]).clamp(max=1.0)
        scaled = x * (new_v / v.clamp_min(1e-8))  # scaling RGB keeps hue and saturation
        return torch.where(v > 0, scaled, new_v.expand_as(x))  # black -> grey


@perturbations.register("saturate")
class Saturate(Corruption):
    """Set HSV saturation to ``clip(s * a + b)`` with (a, b) from (0.3, 0) to (20, 0.2)."""

    contiguous_input = True

    table = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
    identity = (1.0, 0.0)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        if x.shape[1] != 3:
            return x
        v = x.amax(dim=1, keepdim=True)
        s = torch.where(v > 0, (v - x.amin(dim=1, keepdim=True)) / v.clamp_min(1e-12), 0.0)
        s2 = (s * p[0] + p[1]).clamp(0, 1)
        # each channel is v - v * s * g(hue): rescale the (v - channel) gaps by s2 / s
        out = v - (v - x) * (s2 / s.clamp_min(1e-12))
        # grey pixels have hue 0 (red) in skimage: R = v, G = B = v (1 - s2)
        grey = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
        return torch.where(s > 0, out, grey)
