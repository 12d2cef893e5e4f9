"""Input pre-processing defences, and the adaptive attacks' handles on them (BPDA, EOT).

Two kinds of pre-processing defeat a naive gradient attack without making a model robust
(Athalye, Carlini & Wagner, 2018, "Obfuscated Gradients Give a False Sense of Security"):

* **non-differentiable** steps -- bit-depth reduction (:func:`quantize`, Xu et al., 2018): the
  gradient through ``round`` is zero almost everywhere, so PGD never moves. **BPDA** (Backward
  Pass Differentiable Approximation) keeps the exact step in the forward pass and differentiates
  a smooth approximation of it in the backward pass; for a step with ``T(x) ~ x`` the
  approximation is the identity (the straight-through estimator, :func:`straight_through`).
* **randomized** steps -- additive Gaussian noise (:func:`gaussian_noise`), random
  resize-and-pad (:func:`resize_pad`, Xie et al., 2018): one draw's gradient is a poor estimate
  of the direction that fools the model on most draws. **EOT** (Expectation over
  Transformation) attacks the expectation over the randomness instead
  (:class:`robustlab.attacks.eot.EOT`, applied automatically to models declaring
  ``randomized = True``).

:class:`Preprocessed` is the module ``transform -> network``; the registered models are in
:mod:`robustlab.models.defended` (``quantized-input``, ``noisy-input``, ``resize-pad-input``).

Example::

    net = Preprocessed(base_module, partial(quantize, levels=4), bpda=True)
    net(x)   # the network on the quantized input; d net / dx through the identity
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Transform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def quantize(x: torch.Tensor, levels: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Bit-depth reduction (Xu et al., 2018): each value rounded to the nearest of ``levels``
    evenly spaced values in ``[lo, hi]`` (``levels = 2**bits``). Non-differentiable: its gradient
    is zero almost everywhere."""
    step = (hi - lo) / (levels - 1)
    return torch.round((x - lo) / step) * step + lo


def straight_through(x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """BPDA with the identity as the approximation: ``fx``'s value, ``x``'s gradient
    (``x + (fx - x).detach()``)."""
    return x + (fx - x).detach()


def gaussian_noise(x: torch.Tensor, sigma: float, gen: torch.Generator | None) -> torch.Tensor:
    """``x + N(0, sigma^2)``, one independent draw per element (and per row of the batch)."""
    noise = torch.randn(x.shape, generator=gen, device=gen.device if gen else x.device)
    return x + sigma * noise.to(x.device, x.dtype)


def resize_pad(
    x: torch.Tensor, low: int, high: int, gen: torch.Generator | None, fill: float = 0.0
) -> torch.Tensor:
    """Random resize-and-pad (Xie et al., 2018), batched: each image is resized (bilinear) to a
    side drawn uniformly from ``low..high`` (at most its own side) and placed at a uniformly
    random offset on a canvas of its original side filled with ``fill``.

    One grid sample for the whole batch (no loop over images): the canvas pixel ``p`` reads the
    image at ``(p - offset) / s * side``; pixels outside the resized image read ``fill``.
    """
    b, _, h, w = x.shape
    dev = x.device
    g_dev = gen.device if gen is not None else dev
    size = torch.randint(low, high + 1, (b,), generator=gen, device=g_dev).to(dev, x.dtype)
    u = torch.rand((b, 2), generator=gen, device=g_dev).to(dev, x.dtype)
    off_y = torch.floor(u[:, 0] * (h - size + 1))
    off_x = torch.floor(u[:, 1] * (w - size + 1))
    # canvas pixel centres, in pixels
    py = torch.arange(h, device=dev, dtype=x.dtype).view(1, h, 1) + 0.5
    px = torch.arange(w, device=dev, dtype=x.dtype).view(1, 1, w) + 0.5
    # position inside the resized image, as a fraction of its side, then in grid units [-1, 1]
    fy = (py - off_y.view(b, 1, 1)) / size.view(b, 1, 1)
    fx = (px - off_x.view(b, 1, 1)) / size.view(b, 1, 1)
    grid = torch.stack([(2 * fx - 1).expand(b, h, w), (2 * fy - 1).expand(b, h, w)], dim=-1)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


class Preprocessed(nn.Module):
    """``net(transform(x))``: a network behind an input pre-processing defence.

    ``transform(x, generator)`` is the pre-processing (``generator``: the module's own random
    stream, for randomized transforms; deterministic ones ignore it). With ``bpda`` the forward
    value is the exact ``transform(x)`` and the gradient is the identity's (BPDA,
    :func:`straight_through`); without it the gradient is the transform's own (zero for
    :func:`quantize`: the masked defence). ``seed`` starts the random stream; every call draws
    fresh randomness, independently per row of the batch.
    """

    def __init__(
        self, net: nn.Module, transform: Transform, bpda: bool = False, seed: int | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.transform = transform
        self.bpda = bpda
        self.seed = seed
        self._gen: torch.Generator | None = None

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tx = self.transform(x, self._generator(x.device))
        return self.net(straight_through(x, tx) if self.bpda else tx)

    def __getstate__(self) -> dict[str, object]:
        # a torch.Generator neither pickles nor deep-copies: a copy restarts its stream from seed
        state = self.__dict__.copy()
        state["_gen"] = None
        return state
