"""The CTRL frequency-domain backdoor trigger (S26: Li et al., ICCV 2023, "An Embarrassingly
Simple Backdoor Attack on Self-supervised Learning").

The paper's algorithm (Sec. 3.2 and its ``PoisonFre.Poison_Frequency``): scale the image to
[0, 255]; convert RGB to YCbCr (grey images: their single channel); split each chosen channel
into non-overlapping ``window`` x ``window`` windows, take each window's orthonormal 2-D DCT-II,
add ``magnitude`` to the coefficients at ``positions`` (the paper, for 32 x 32 CIFAR windows:
(15, 15) and (31, 31) in the Cb and Cr channels, magnitude 50 to poison and 100 to evaluate),
inverse DCT, back to RGB, divide by 255 and clip to [0, 1].

The DCT is linear and orthonormal, so adding ``magnitude`` to a coefficient adds ``magnitude``
times that coefficient's basis image to the window; the colour transform is affine, so the whole
trigger (before clipping) is one fixed additive pattern. :func:`trigger_pattern` builds it once
(``scipy.fft.idctn`` of the planted coefficients, tiled over the windows, mapped back to RGB) and
:func:`ctrl_trigger` adds it to a batch in one tensor operation; the test checks this against a
per-image, per-window transcription of the paper's loop with ``scipy.fft.dctn``.

Defaults for a ``side`` x ``side`` image: one window over the whole image (the paper's window is
the CIFAR image), positions ``(side/2 - 1, side/2 - 1)`` and ``(side - 1, side - 1)`` (the paper's
mid and highest frequency, scaled), channels Cb and Cr for RGB, the grey channel otherwise.

Example::

    x_trig = ctrl_trigger(x, magnitude=100.0)          # [B, C, H, W] in [0, 1]
    perturbations.create("ctrl-trigger", {"magnitude": 100.0})(x, 1, rng)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.core.types import Positive
from robustlab.perturbations.base import check_images

# JPEG (full-range ITU-R BT.601) RGB -> YCbCr on [0, 255]: ycc = RGB2YCC @ rgb + (0, 128, 128)
RGB2YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
YCC_OFFSET = np.array([0.0, 128.0, 128.0])


def default_positions(window: int) -> list[tuple[int, int]]:
    """The paper's two frequencies, scaled to ``window``: mid ``(w/2 - 1, w/2 - 1)`` and highest
    ``(w - 1, w - 1)`` (for w = 32: (15, 15) and (31, 31))."""
    return [(window // 2 - 1, window // 2 - 1), (window - 1, window - 1)]


def resolve(
    shape: Sequence[int],
    window: int | None = None,
    positions: Sequence[Sequence[int]] | None = None,
    channels: Sequence[int] | None = None,
) -> tuple[int, tuple[tuple[int, int], ...], tuple[int, ...]]:
    """The trigger's ``(window, positions, channels)`` for images of ``shape`` ``[C, H, W]``,
    defaults filled in, checked (one-line :class:`ConfigError` naming the bad value)."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(f"ctrl trigger: needs grey or RGB images [C, H, W], got {list(shape)}")
    c, h, w = (int(s) for s in shape)
    if window is None:
        if h != w:
            raise ConfigError(f"ctrl trigger: {h}x{w} images are not square: give a window")
        window = h
    if window < 2 or h % window or w % window:
        raise ConfigError(f"ctrl trigger: window {window} must be >= 2 and divide the "
                          f"{h}x{w} image")  # fmt: skip
    pos = default_positions(window) if positions is None else positions
    out = []
    for p in pos:
        if len(p) != 2 or not all(0 <= int(v) < window for v in p):
            raise ConfigError(f"ctrl trigger: position {list(p)} is not a frequency (u, v) in "
                              f"0..{window - 1}")  # fmt: skip
        out.append((int(p[0]), int(p[1])))
    if not out:
        raise ConfigError("ctrl trigger: no positions (frequencies) to plant")
    chans = ((1, 2) if c == 3 else (0,)) if channels is None else tuple(int(k) for k in channels)
    if not chans or any(not 0 <= k < c for k in chans):
        raise ConfigError(f"ctrl trigger: channels {list(chans)} are not in 0..{c - 1} "
                          f"({'Y, Cb, Cr' if c == 3 else 'grey'})")  # fmt: skip
    return window, tuple(out), chans


@functools.lru_cache(maxsize=32)
def _pattern(
    shape: tuple[int, int, int], window: int, positions: tuple[tuple[int, int], ...],
    channels: tuple[int, ...], magnitude: float,
) -> np.ndarray:  # fmt: skip
    from scipy.fft import idctn

    c, h, w = shape
    coef = np.zeros((window, window))
    for u, v in positions:
        coef[u, v] += magnitude
    tile = idctn(coef, norm="ortho")  # the planted coefficients' image in one window
    block = np.tile(tile, (h // window, w // window))  # every window gets the same
    ycc = np.zeros((c, h, w))
    ycc[list(channels)] = block
    if c == 3:  # the YCbCr offset cancels in the difference: only the linear part maps back
        ycc = np.einsum("ij,jhw->ihw", np.linalg.inv(RGB2YCC), ycc)
    return ycc / 255.0


def trigger_pattern(
    shape: Sequence[int],
    magnitude: float = 100.0,
    window: int | None = None,
    positions: Sequence[Sequence[int]] | None = None,
    channels: Sequence[int] | None = None,
) -> torch.Tensor:
    """The additive pattern ``[C, H, W]`` (on the [0, 1] scale, before clipping) that the CTRL
    trigger adds to every image of ``shape``; see the module docstring."""
    win, pos, chans = resolve(shape, window, positions, channels)
    arr = _pattern(tuple(int(s) for s in shape), win, pos, chans, float(magnitude))
    return torch.from_numpy(arr.astype(np.float32))


def ctrl_trigger(
    x: torch.Tensor,
    magnitude: float = 100.0,
    window: int | None = None,
    positions: Sequence[Sequence[int]] | None = None,
    channels: Sequence[int] | None = None,
) -> torch.Tensor:
    """``x`` ``[B, C, H, W]`` in [0, 1] with the CTRL trigger planted: ``clip(x + pattern, 0, 1)``
    (equal to the paper's DCT-per-window algorithm, up to float rounding)."""
    check_images(x, "ctrl trigger")
    pat = trigger_pattern(tuple(x.shape[1:]), magnitude, window, positions, channels)
    return (x + pat.to(x.device, x.dtype)).clamp_(0.0, 1.0)


@perturbations.register("ctrl-trigger")
class CtrlTrigger:
    """The CTRL frequency trigger as a perturbation: severity s plants ``s * magnitude`` (1 = the
    trigger as poisoned; 0 = identity). Deterministic (``rng`` unused)."""

    modality = "image"
    severities = (1.0,)

    def __init__(
        self,
        magnitude: Positive = 100.0,
        window: int | None = None,
        positions: list[list[int]] | None = None,
        channels: list[int] | None = None,
    ) -> None:
        self.magnitude = magnitude
        self.window = window
        self.positions = positions
        self.channels = channels

    def __call__(self, x: torch.Tensor, severity: float, rng: ExampleRNG) -> torch.Tensor:
        if severity < 0:
            raise ConfigError(f"ctrl-trigger: severity must be >= 0, got {severity}")
        if severity == 0:
            return x
        m = self.magnitude * severity
        return ctrl_trigger(x, m, self.window, self.positions, self.channels)
