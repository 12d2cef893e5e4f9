"""scikit-image's bundled photos with ImageNet labels (for pretrained ImageNet classifiers such as
``efficientnet-lite0``). The files ship inside the scikit-image wheel: nothing is downloaded.

Labels were chosen by looking at each photo and picking the ImageNet-1k class that names its main
object; ``accept`` (metadata) lists every class that is also right for it (ImageNet's fine-grained
cat breeds; its motorcycle-like classes). Photos without a matching ImageNet class (the astronaut
portrait, coins, microscopy, text) are left out.

| photo | label (ImageNet id) | also right |
|---|---|---|
| ``chelsea`` | tabby (281) | tiger cat (282), Egyptian cat (285) |
| ``coffee`` | espresso (967) | cup (968), coffee mug (504) |
| ``camera`` (grey) | tripod (872) | reflex camera (759) |
| ``rocket`` | missile (657) | projectile (744), space shuttle (812) |
| ``motorcycle_left`` / ``_right`` | moped (665) | motor scooter (670) |

Example::

    d = datasets.create("skimage-photos", {"size": 224})   # [6, 3, 224, 224] in [0, 1]
    d.meta["photo"], d.meta["class_name"], d.meta["accept"]
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import Domain, PositiveInt
from robustlab.data.base import Dataset, cached_arrays

# photo -> (ImageNet id, class name, ids also right)
PHOTOS: dict[str, tuple[int, str, tuple[int, ...]]] = {
    "chelsea": (281, "tabby", (281, 282, 285)),
    "coffee": (967, "espresso", (967, 968, 504)),
    "camera": (872, "tripod", (872, 759)),
    "rocket": (657, "missile", (657, 744, 812)),
    "motorcycle_left": (665, "moped", (665, 670)),
    "motorcycle_right": (665, "moped", (665, 670)),
}


def _load(name: str) -> np.ndarray:
    import skimage.data as sd

    if name.startswith("motorcycle_"):
        left, right, _ = sd.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(sd, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def center_crop_resize(img: np.ndarray, size: int) -> torch.Tensor:
    """``[3, size, size]`` float image: central square crop, anti-aliased bilinear resize."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None] / 255.0
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 1)


@datasets.register("skimage-photos")
def skimage_photos(size: PositiveInt = 224, photos: list[str] | None = None) -> Dataset:
    """The photos above as ``[N, 3, size, size]`` RGB in [0, 1] (central square crop, resized),
    labels = ImageNet-1k class ids. ``photos`` selects a subset by name (default: all six).
    Metadata: ``photo``, ``class_name``, ``accept`` (comma-separated ids also counted right)."""
    if not isinstance(size, int) or size < 8:
        raise ConfigError(f"skimage-photos: size must be an integer >= 8, got {size!r}")
    names = list(PHOTOS) if photos is None else list(photos)
    unknown = [n for n in names if n not in PHOTOS]
    if unknown or not names:
        raise ConfigError(
            f"skimage-photos: unknown photo(s) {unknown or names!r}; choose from {sorted(PHOTOS)}"
        )
    return Dataset(
        x=_photo_tensor(names, size),
        y=torch.tensor([PHOTOS[n][0] for n in names], dtype=torch.long),
        name="skimage-photos",
        ids=torch.tensor([list(PHOTOS).index(n) for n in names]),
        meta={
            "photo": names,
            "class_name": [PHOTOS[n][1] for n in names],
            "accept": [",".join(map(str, PHOTOS[n][2])) for n in names],
        },
        domain=Domain(0.0, 1.0, (3, size, size)),
    )


def _photo_tensor(names: list[str], size: int) -> torch.Tensor:
    """The photos cropped and resized, cached on disk per scikit-image and torch version
    (:func:`~robustlab.data.base.cached_arrays`): a warm cache skips importing scikit-image and
    decoding the files (~1 s)."""

    def build() -> dict[str, np.ndarray]:
        try:
            x = torch.stack([center_crop_resize(_load(n), size) for n in names])
        except ImportError:
            hint = "skimage-photos needs scikit-image: pip install scikit-image"
            raise ConfigError(hint) from None
        return {"x": x.numpy()}

    key = {"name": "skimage-photos", "photos": names, "size": size, "v": 1}
    return torch.from_numpy(cached_arrays(key, build, packages=["scikit-image", "torch"])["x"])
