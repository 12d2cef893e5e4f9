"""Weather corruptions of ImageNet-C: snow, frost, fog (as ``imagecorruptions``).

Threat model: natural weather over the scene; severities 1-5 index the paper's tables.

Frost overlays crops of the five frost photographs shipped in the ``imagecorruptions`` package
when it is installed (read from its folder with Pillow at run time, never downloaded); otherwise a
procedural frost texture (multi-scale noise ridges, seeded, same mean/contrast band) is used.

Example::

    x2 = perturbations.create("fog")(x, 3, ExampleRNG.from_seed(0, ids))
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.image._ops import Corruption, draw, luma, zoom_matrix
from robustlab.perturbations.image.blur import motion_blur


@perturbations.register("snow")
class Snow(Corruption):
    """Zoomed, thresholded Gaussian flakes, motion-blurred along a direction in [-135, -45] deg,
    added twice (rotated 180 deg) over a brightened image."""

    contiguous_input = True

    table = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    )
    identity = (0.0, 0.3, 3, 1.0, 10, 4, 1.0)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        loc, scale, zoom, thr, radius, sigma, blend = p
        h, w = x.shape[-2:]
        layer = draw(rng, (1, h, w), "normal", x.device).mul_(scale).add_(loc)
        layer = (
            zoom_matrix(h, zoom, x.device).to(x) @ layer @ zoom_matrix(w, zoom, x.device).T.to(x)
        )
        layer = layer.masked_fill_(layer < thr, 0.0).clamp_(0, 1)
        angle = rng.uniform(1, dtype=torch.float64)[:, 0] * 90 - 135
        layer = motion_blur(layer, round(radius), sigma, angle)
        layer = layer.mul_(255).round_().div_(255)
        # luma(x) is x itself for grey images: never modify it in place
        out = torch.maximum(x, (luma(x) * 1.5).add_(0.5)).mul_(1 - blend).add_(x, alpha=blend)
        return out.add_(layer + layer.flip(-1, -2))


def _plasma(u: torch.Tensor, size: int, decay: float) -> torch.Tensor:
    """Batched diamond-square heightmaps ``[B, size, size]`` in [0, 1] (imagecorruptions'
    ``plasma_fractal``); ``u`` holds uniform(-1, 1) numbers, ``size**2 - 1`` per example.

    float32 (the reference uses float64): after the normalisation to [0, 1] the maps differ by
    less than 1e-5."""
    b = u.shape[0]
    m = torch.zeros(b, size, size, dtype=torch.float32, device=u.device)
    step, wibble, used = size, 100.0, 0

    def noisy(a: torch.Tensor) -> torch.Tensor:
        nonlocal used
        n = a[0].numel()
        r = u[:, used : used + n].view_as(a)
        used += n
        return torch.add(a.mul_(0.25), r, alpha=wibble * wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, ::step, ::step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, half::step, half::step] = noisy(sq)
        dr, ul = m[:, half::step, half::step], m[:, ::step, ::step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, ::step, half::step] = noisy(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, half::step, ::step] = noisy(tt)
        step, wibble = half, wibble / decay
    m = m.sub_(m.amin(dim=(1, 2), keepdim=True))
    return m.div_(m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12))


@perturbations.register("fog")
class Fog(Corruption):
    """Add a plasma-fractal fog layer (strength 1.5-3, roughness decay 2-1.4), then rescale by
    ``max / (max + strength)`` of each image."""

    table = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
    identity = (0.0, 2.0)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = 1 << (max(h, w, 3) - 1).bit_length()
        u = draw(rng, (size * size - 1,), "uniform", x.device, **{"from": -1.0, "to": 1.0})
        fog = _plasma(u, size, p[1])[:, None, :h, :w].to(x)
        vmax = x.amax(dim=(1, 2, 3), keepdim=True)
        return torch.add(x, fog, alpha=p[0]).mul_(vmax / (vmax + p[0]))


@functools.cache
def _frost_textures() -> tuple[torch.Tensor, ...]:
    """The frost photographs of ``imagecorruptions`` as ``[3, h, w]`` tensors, or procedural ones."""
    from PIL import Image

    spec = importlib.util.find_spec("imagecorruptions")
    folder = Path(spec.origin).parent / "frost" if spec and spec.origin else None
    names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
    if folder is not None and all((folder / n).is_file() for n in names):
        out = []
        for n in names:
            with Image.open(folder / n) as im:
                arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
                out.append(arr.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255)
        return tuple(out)
    return tuple(_procedural_frost(i) for i in range(5))


def _procedural_frost(seed: int, size: int = 512) -> torch.Tensor:
    """A frost-like texture: bright thin ridges of multi-scale noise over a pale blue-grey base."""
    g = torch.Generator().manual_seed(1000 + seed)
    acc = torch.zeros(1, 1, size, size)
    for k, cells in enumerate((8, 16, 32, 64, 128)):
        n = torch.rand(1, 1, cells, cells, generator=g)
        acc += F.interpolate(n, size=(size, size), mode="bicubic", align_corners=False) / 1.6**k
    acc = (acc - acc.mean()) / acc.std()
    ridges = torch.exp(-4 * (acc - acc.round()).abs())  # thin crystal lines
    tex = (0.35 + 0.55 * ridges).clamp(0, 1)
    tint = torch.tensor([0.85, 0.92, 1.0]).view(3, 1, 1)
    return (tex[0] * tint).clamp(0, 1)


@functools.lru_cache(maxsize=16)
def _scaled_frost(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every texture scaled as the reference does (to cover the image, times 1.1, bicubic), zero-
    padded into one ``[5, 3, Hs, Ws]`` stack, and the ``[5, 2]`` sizes of the textures."""
    scaled = []
    for t in _frost_textures():
        th, tw = t.shape[-2:]
        f = 1.1 * max(1.0, h / th, w / tw)
        size = (int(-(-th * f // 1)), int(-(-tw * f // 1)))
        scaled.append(F.interpolate(t[None], size=size, mode="bicubic", align_corners=False)[0])
    hs, ws = max(s.shape[1] for s in scaled), max(s.shape[2] for s in scaled)
    stack = torch.stack([F.pad(s, (0, ws - s.shape[2], 0, hs - s.shape[1])) for s in scaled])
    return stack.clamp(0, 1), torch.tensor([s.shape[1:] for s in scaled])


@perturbations.register("frost")
class Frost(Corruption):
    """``a * x + b * frost`` with a random crop of one of five frost textures, (a, b) from
    (1, 0.4) to (0.6, 0.75) over severities 1-5; grey images get the texture's luma."""

    table = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
    identity = (1.0, 0.0)

    def apply(self, x: torch.Tensor, p: tuple[float, ...], rng: ExampleRNG) -> torch.Tensor:
        b, c, h, w = x.shape
        tex, sizes = _scaled_frost(h, w)
        tex = tex.to(x.device, x.dtype)
        k = rng.integers(len(tex), 1)[:, 0]
        u = rng.uniform(2, dtype=torch.float64)
        top = (u[:, 0] * (sizes[k, 0] - h)).long().to(x.device)
        left = (u[:, 1] * (sizes[k, 1] - w)).long().to(x.device)
        k = k.to(x.device)
        rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]
        crop = tex[k[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # [B, 3, H, W]
        if c == 1:
            crop = luma(crop)
        return p[0] * x + p[1] * crop
