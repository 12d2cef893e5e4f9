"""Image perturbations without an optional reference: invariants of the 19 ImageNet-C corruptions
at any size and channel count, bad input, geometric transforms against exact results and Pillow,
patch-wise corruption, attribute edits on Fashion-MNIST, and the shot-noise sampler.

Nothing here needs ``imagecorruptions`` or scikit-image (the comparisons with ``imagecorruptions``
are in tests/test_image_perturbations.py, which skips without it): the photos are scikit-learn's
two bundled sample images, Pillow comes with matplotlib.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG

CORRUPTIONS = [
    *("gaussian_blur", "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate"),
    *("jpeg_compression", "saturate", "gaussian_noise", "shot_noise", "impulse_noise"),
    *("speckle_noise", "motion_blur", "elastic_transform", "glass_blur", "snow", "frost", "fog"),
    "spatter",
]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Three 48x48 RGB uint8 photos: scikit-learn's china.jpg and flower.jpg, and a crop of each."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    views = [china, flower, china[100:356, 200:456]]
    return np.stack(
        [np.asarray(Image.fromarray(v).resize((48, 48), Image.BILINEAR)) for v in views]
    )


def test_the_corruptions_are_registered() -> None:
    assert len(set(CORRUPTIONS)) == 19 and all(n in perturbations for n in CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_invariants_any_size_and_channels(name: str) -> None:
    p = perturbations.create(name)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 40, 40, generator=g)
    rng = lambda: ExampleRNG.from_seed(0, torch.arange(4))  # noqa: E731
    change = [float((p(x, s, rng()) - x).abs().mean()) for s in (1, 3, 5)]
    if name != "saturate":  # saturate goes 0.3x, 0.1x, 2x, 5x, 20x: not monotone
        assert change[0] <= change[2] + 1e-6, f"{name}: severity 5 changes less than 1"
    half = p(x, 2.5, rng())
    assert half.shape == x.shape and float(half.min()) >= 0 and float(half.max()) <= 1
    for shape in [(2, 1, 8, 8), (2, 3, 33, 17), (1, 1, 5, 70)]:
        y = p(torch.rand(*shape, generator=g), 5, ExampleRNG.from_seed(0, torch.arange(shape[0])))
        assert y.shape == shape and bool(torch.isfinite(y).all())


def test_bad_input() -> None:
    p = perturbations.create("fog")
    rng = ExampleRNG.from_seed(0, torch.arange(2))
    with pytest.raises(ConfigError, match="channels"):
        p(torch.rand(2, 4, 8, 8), 1, rng)
    with pytest.raises(ConfigError, match="severity"):
        p(torch.rand(2, 3, 8, 8), 6, rng)
    with pytest.raises(ConfigError, match=r"\[B, C, H, W\]"):
        p(torch.rand(3, 8, 8), 1, rng)


# ---- continuous transforms, patch-wise corruptions, attribute edits -------------------------


def _rng(n: int, seed: int = 0) -> ExampleRNG:
    return ExampleRNG.from_seed(seed, torch.arange(n))


def test_geometric_against_exact_and_pillow(rgb: np.ndarray) -> None:
    from PIL import Image

    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    rot = perturbations.create("rotate")
    assert torch.allclose(rot(x, 90.0, _rng(3)), torch.rot90(x, 1, (2, 3)), atol=1e-5)
    # Pillow's rotate (counter-clockwise about the centre, bilinear) as an independent reference
    ours = rot(x, 30.0, _rng(3))[:, :, 8:-8, 8:-8]
    ref = np.stack([np.asarray(Image.fromarray(im).rotate(30, Image.BILINEAR)) for im in rgb])
    ref_t = torch.from_numpy(ref).permute(0, 3, 1, 2).float()[:, :, 8:-8, 8:-8] / 255
    assert float((ours - ref_t).abs().mean()) < 2 / 255
    shifted = perturbations.create("translate", {"direction": 90.0})(x, 3 / 48, _rng(3))
    assert (
        torch.allclose(shifted[:, :, 3:], x[:, :, :-3], atol=1e-5)
        and float(shifted[:, :, :3].max()) < 1e-5
    )
    sc = perturbations.create("scale")
    per_example = sc(x, torch.tensor([-0.5, 0.0, 0.25]), _rng(3))
    for i, s in enumerate([-0.5, 0.0, 0.25]):
        assert torch.allclose(per_example[i], sc(x[i : i + 1], s, _rng(1))[0], atol=1e-6)
    assert torch.equal(per_example[1], x[1])
    with pytest.raises(ConfigError, match="> -1"):
        sc(x, -1.0, _rng(3))
    b = perturbations.create("brightness_shift")(x, -0.2, _rng(3))
    assert torch.allclose(b, (x - 0.2).clamp(0, 1))


def test_patch_corruption_hits_exactly_k_patches(rgb: np.ndarray) -> None:
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    p = perturbations.create("patch_corruption", {"patch_size": 8, "corruption": "gaussian_noise"})
    out = p(x, 0.25, _rng(3))
    changed = (out != x).view(3, 3, 6, 8, 6, 8).any(dim=(1, 3, 5))  # [B, 6, 6] patch grid
    assert changed.sum(dim=(1, 2)).tolist() == [9, 9, 9]
    full = perturbations.create("gaussian_noise")(x, 5, _rng(3).fork("patch-corruption"))
    m = changed.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None].expand_as(x)
    assert torch.equal(out[m], full[m]) and torch.equal(out[~m], x[~m])
    k = perturbations.create("patch_corruption", {"patch_size": 16, "count": True})
    assert (
        (k(x, 2, _rng(3)) != x).view(3, 3, 3, 16, 3, 16).any(dim=(1, 3, 5)).sum((1, 2)) == 2
    ).all()
    with pytest.raises(ConfigError, match="severity"):
        p(x, 1.5, _rng(3))


def test_attribute_edits_on_fashion_mnist() -> None:
    from robustlab.perturbations.image.attributes import object_mask

    d = datasets_create_fashion(16)
    x = torch.nn.functional.pad(d, (6, 6, 6, 6))  # margin so moved objects stay inside
    m = object_mask(x)
    area = m.sum(dim=(1, 2, 3))
    assert bool((area > 20).all())
    shift = perturbations.create("object_shift", {"direction": 0.0})(x, 3 / 40, _rng(16))
    assert torch.allclose(object_mask(shift).sum((1, 2, 3)), area, rtol=0.1)
    assert torch.allclose(shift[..., 3:] * m[..., :-3], x[..., :-3] * m[..., :-3], atol=1e-5)
    small = perturbations.create("object_scale")(x, -0.5, _rng(16))
    ratio = object_mask(small).sum((1, 2, 3)) / area
    assert bool(((ratio > 0.15) & (ratio < 0.35)).all()), ratio  # area scales by 0.5**2
    turned = perturbations.create("object_rotate")(x, 180.0, _rng(16))
    # off-grid centroids: bilinear resampling spreads the edges a little
    assert abs(float((object_mask(turned).sum((1, 2, 3)) / area).mean()) - 1) < 0.15
    # about the centroid: a non-square image keeps each object's centroid under rotation/scaling
    wide = torch.nn.functional.pad(d, (20, 8, 4, 8))
    for name, sev in (("object_rotate", 180.0), ("object_scale", -0.4)):
        before, after = (
            _centroids(object_mask(wide)),
            _centroids(object_mask(perturbations.create(name)(wide, sev, _rng(16)))),
        )
        assert float((before - after).abs().max()) < 1.0, name
    bg = perturbations.create("background_swap")(x, 1.0, _rng(16))
    assert torch.equal(bg[m.bool()], x[m.bool()]) and float((bg - x)[~m.bool()].abs().mean()) > 0.2
    supplied = torch.zeros_like(m)
    assert torch.equal(perturbations.create("object_shift")(x, 0.1, _rng(16), mask=supplied), x)
    with pytest.raises(ConfigError, match="mask"):
        perturbations.create("object_rotate")(x, 10.0, _rng(16), mask=m[:, :, :5])


def datasets_create_fashion(n: int) -> torch.Tensor:
    from robustlab.core.registry import datasets

    return datasets.create("fashion-mnist", {"split": "test", "limit": n}).x


def _centroids(m: torch.Tensor) -> torch.Tensor:
    ys = torch.arange(m.shape[2], dtype=m.dtype)[:, None]
    xs = torch.arange(m.shape[3], dtype=m.dtype)
    area = m.sum((1, 2, 3))
    return torch.stack([(m * xs).sum((1, 2, 3)) / area, (m * ys).sum((1, 2, 3)) / area], 1)


@pytest.mark.parametrize("c", [60.0, 12.0, 3.0, 7.3])
def test_shot_noise_table_sampler_is_poisson(c: float) -> None:
    """The table-inversion sampler of shot_noise draws Poisson(c x) on and off the 8-bit grid."""
    from scipy.stats import poisson

    from robustlab.perturbations.image.noise import poisson_counts

    n = 100_000
    for level in (0.0, 100 / 255, 1.0, 0.0021, 0.3337, 0.9999):
        x = torch.full((4, 1, 1, n // 4), level)
        gens = [torch.Generator().manual_seed(17 + i) for i in range(4)]
        k = poisson_counts(x, c, gens).flatten().long()
        emp = torch.bincount(k, minlength=int(c) * 3 + 40).double() / n
        exact = torch.from_numpy(poisson.pmf(np.arange(len(emp)), c * level))
        tv = 0.5 * float((emp - exact).abs().sum())
        assert tv < 0.012, f"c={c} x={level}: total variation {tv:.4f}"
        assert abs(float(k.double().mean()) - c * level) < 5 * math.sqrt(c * level / n) + 1e-9
