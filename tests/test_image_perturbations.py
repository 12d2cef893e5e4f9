"""The 19 ImageNet-C corruptions against the ``imagecorruptions`` package on the same real images.

Only the comparisons with the reference live here (the module skips without ``imagecorruptions``
or scikit-image); the reference-free tests of image perturbations are in
tests/test_image_perturbations_invariants.py, which always runs.

Deterministic corruptions must match the reference pixel for pixel (mean absolute difference below
1.5/255: the reference floors its float output to uint8, which alone costs 0.5-1/255). Random ones are compared by the statistics of
the change they make (mean and standard deviation of ``out - x`` over images and draws), with a
tolerance per corruption documented in docs/vision-perturbations.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG

ic = pytest.importorskip("imagecorruptions", exc_type=ImportError)
skdata = pytest.importorskip("skimage.data")

DETERMINISTIC = {
    "gaussian_blur": 1.5,
    "defocus_blur": 1.5,
    "zoom_blur": 1.5,
    "brightness": 1.5,
    "contrast": 1.5,
    "pixelate": 1.5,
    "jpeg_compression": 1.5,
    "saturate": 1.5,
}
# corruption -> (abs. tolerance of the mean change in /255, rel. tolerance of its std)
RANDOM = {
    "gaussian_noise": (2.0, 0.05),
    "shot_noise": (2.0, 0.05),
    "impulse_noise": (2.0, 0.05),
    "speckle_noise": (2.0, 0.05),
    "motion_blur": (2.0, 0.08),
    "elastic_transform": (2.0, 0.08),
    "glass_blur": (2.0, 0.08),
    "snow": (8.0, 0.15),
    "frost": (15.0, 0.15),
    "fog": (12.0, 0.12),
    "spatter": (4.0, 0.2),
}


def _reference() -> object:
    """``imagecorruptions.corrupt`` made to run on numpy 2 / scikit-image >= 0.19 (its own bugs:
    ``np.float_`` and ``gaussian(multichannel=...)`` were removed upstream)."""
    import imagecorruptions.corruptions as icc
    import skimage.filters

    np.float_ = np.float64  # type: ignore[attr-defined]
    if not getattr(icc, "_robustlab_patched", False):
        gauss = skimage.filters.gaussian

        def gaussian(img: np.ndarray, sigma: float = 1, multichannel: bool = False, **kw: object):
            return gauss(img, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)

        icc.gaussian = gaussian
        icc._robustlab_patched = True
    return ic.corrupt


def _photos(size: int) -> np.ndarray:
    from PIL import Image

    out = []
    for f in (skdata.astronaut, skdata.chelsea, skdata.coffee):
        out.append(np.asarray(Image.fromarray(f()).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return _photos(48)


@pytest.fixture(scope="module")
def fashion() -> np.ndarray:
    from robustlab.core.registry import datasets

    d = datasets.create("fashion-mnist", {"split": "test", "limit": 3})
    x = torch.nn.functional.interpolate(d.x, size=(32, 32), mode="bilinear", align_corners=False)
    return np.round(x[:, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)


def _run(name: str, imgs: np.ndarray, severity: int, reps: int) -> tuple[torch.Tensor, ...]:
    corrupt = _reference()
    gray = imgs.ndim == 3
    np.random.seed(severity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.stack([[corrupt(im, severity, name) for im in imgs] for _ in range(reps)])
    ref_t = torch.from_numpy(ref.astype(np.float64) / 255).permute(0, 1, 4, 2, 3)
    x = torch.from_numpy(imgs.astype(np.float32) / 255)
    x = x[:, None] if gray else x.permute(0, 3, 1, 2)
    if gray:
        ref_t = ref_t[:, :, :1]
    p = perturbations.create(name)
    ours = torch.stack(
        [p(x, severity, ExampleRNG.from_seed(r, torch.arange(len(x)))) for r in range(reps)]
    )
    return x.double(), ref_t, ours.double()


@pytest.mark.parametrize("name", list(DETERMINISTIC))
@pytest.mark.parametrize("images", ["rgb", "fashion"])
def test_deterministic_matches_reference(name: str, images: str, request: pytest.FixtureRequest):
    imgs = request.getfixturevalue(images)
    for s in (1, 2, 3, 4, 5):
        _, ref, ours = _run(name, imgs, s, 1)
        mad = float((ours - ref).abs().mean()) * 255
        assert mad < DETERMINISTIC[name], f"{name} severity {s}: MAD {mad:.2f}/255"


@pytest.mark.parametrize("name", list(RANDOM))
def test_random_statistics_match_reference(name: str, rgb: np.ndarray) -> None:
    tol_mean, tol_std = RANDOM[name]
    reps = {"glass_blur": 2, "frost": 24, "fog": 16, "snow": 10}.get(name, 6)
    for s in (1, 3, 5):
        x, ref, ours = _run(name, rgb, s, reps)
        dr, do = (ref - x) * 255, (ours - x) * 255
        # the reference truncates to uint8: its mean change is biased by -0.5/255
        assert abs(float(do.mean()) - float(dr.mean()) - 0.5) < tol_mean, (
            f"{name} s{s}: mean change {float(do.mean()):.2f} vs {float(dr.mean()):.2f}"
        )
        rel = abs(float(do.std()) / float(dr.std()) - 1)
        assert rel < tol_std, f"{name} s{s}: std of change off by {rel:.1%}"


def test_every_corruption_is_compared() -> None:
    from test_image_perturbations_invariants import CORRUPTIONS

    assert set(DETERMINISTIC) | set(RANDOM) == set(CORRUPTIONS)
