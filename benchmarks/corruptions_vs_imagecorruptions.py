"""Corruption throughput (images/s): robustlab's batched corruptions vs ``imagecorruptions.corrupt``.

Same batch for both (crops of scikit-image's photos: 64 images of 64x64 RGB and of 32x32 RGB),
severity 3, measured side by side in this run. The reference loops over the images as its API
requires (uint8 HWC in, uint8 out); robustlab takes the float [B, C, H, W] batch. glass_blur's
reference is timed on the first 4 images only (its Python pixel loop takes seconds per image).
Each side: one warm-up call, then the best of ``--repeats`` timed calls. torch runs on one thread
by default (``--threads``), like the numpy/OpenCV reference, so the ratio is per core; times are
process CPU time (``time.process_time``), which a busy shared machine disturbs far less than
wall time.

    .venv/bin/python benchmarks/corruptions_vs_imagecorruptions.py [--repeats 3] [--only fog,snow]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

from robustlab.core.registry import perturbations
from robustlab.core.rng import ExampleRNG

NAMES = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
]


def reference():  # noqa: ANN201
    """``imagecorruptions.corrupt``, patched for numpy 2 / scikit-image >= 0.19 (removed APIs)."""
    import imagecorruptions.corruptions as icc
    import skimage.filters
    from imagecorruptions import corrupt

    np.float_ = np.float64  # type: ignore[attr-defined]
    gauss = skimage.filters.gaussian

    def gaussian(img: np.ndarray, sigma: float = 1, multichannel: bool = False, **kw: object):
        return gauss(img, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)

    icc.gaussian = gaussian
    return corrupt


def batch(n: int, size: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    g = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        s = int(g.integers(size * 2, min(p.shape[:2])))
        t, left = int(g.integers(0, p.shape[0] - s)), int(g.integers(0, p.shape[1] - s))
        crop = Image.fromarray(p[t : t + s, left : left + s]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop))
    return np.stack(out)


def best(f, repeats: int) -> float:  # noqa: ANN001
    f()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        f()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the reference uses 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else NAMES
    corrupt = reference()
    warnings.simplefilter("ignore")
    print(f"torch threads: {torch.get_num_threads()}, batch {args.n}, severity 3")
    ratios = []
    for size in (64, 32):
        imgs = batch(args.n, size)
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
        ids = torch.arange(len(x))
        print(
            f"\n{size}x{size} RGB   {'robustlab img/s':>16} {'imagecorr. img/s':>17} {'ratio':>7}"
        )
        for name in names:
            p = perturbations.create(name)
            t_ours = best(lambda p=p, x=x, i=ids: p(x, 3, ExampleRNG.from_seed(0, i)), args.repeats)
            sub = imgs[:4] if name == "glass_blur" else imgs
            reps = 1 if name == "glass_blur" else args.repeats
            t_ref = best(lambda sub=sub, name=name: [corrupt(im, 3, name) for im in sub], reps)
            ours, ref = len(x) / t_ours, len(sub) / t_ref
            ratios.append(ours / ref)
            print(f"{name:18s} {ours:16.0f} {ref:17.1f} {ours / ref:7.1f}x")
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(
        f"\nratio over {len(ratios)} (corruption, size) pairs: arithmetic mean {np.mean(ratios):.1f}x"
    )
    print(f"geometric mean {geo:.1f}x, median {np.median(ratios):.1f}x, min {min(ratios):.2f}x")


if __name__ == "__main__":
    main()
