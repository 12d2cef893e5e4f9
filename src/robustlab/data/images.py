"""Image data sources: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and folders of images,
with optional object masks (``fields["mask"]``, ``[N, 1, H, W]`` in [0, 1]) that the runner passes
to the attribute-edit perturbations (``object_*``, ``background_swap``; S3).

Example::

    d = datasets.create("fashion-mnist", {"split": "test", "limit": 1000})   # [1000, 1, 28, 28]
    d = datasets.create("fashion-mnist", {"limit": 100, "masks": True})      # + threshold masks
    d = datasets.create("image-folder", {"root": "photos/", "size": 64, "masks": "masks/"})
    d = datasets.create("object-masks", {"data": {"name": "digits"}, "threshold": 0.2})
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import Domain, PositiveInt, Rate
from robustlab.data.base import Dataset

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@functools.lru_cache(maxsize=4)
def _idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def _check_limit(limit: int | None, name: str) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{name}: limit must be a positive integer or null, got {limit!r}")


@datasets.register("fashion-mnist")
def fashion_mnist(
    split: str = "test",
    limit: PositiveInt | None = None,
    root: str = FASHION_ROOT,
    masks: bool = False,
    mask_threshold: Rate = 0.1,
    size: PositiveInt = 28,
) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28x28 grey images in [0, 1].

    Read from the IDX files of Debian's ``dataset-fashion-mnist`` package (no download). ``limit``
    keeps the first examples of the split. Ids are the index in the split (test ids start at
    60,000, so they never collide with train ids). Metadata: ``label`` (class name). ``masks``:
    add object masks derived by threshold (:func:`threshold_masks`, ``mask_threshold``). ``size``:
    resize to ``size`` x ``size`` (antialiased bilinear; e.g. 8 to match the digits as an OOD set).
    """
    if split not in ("train", "test"):
        raise ConfigError(f"fashion-mnist split must be 'train' or 'test', got {split!r}")
    _check_limit(limit, "fashion-mnist")
    stem = "train" if split == "train" else "t10k"
    img = Path(root) / f"{stem}-images-idx3-ubyte.gz"
    lab = Path(root) / f"{stem}-labels-idx1-ubyte.gz"
    if not img.is_file() or not lab.is_file():
        raise ConfigError(
            f"fashion-mnist: {img} not found; install it with `apt-get install dataset-fashion-mnist`"
        )
    y = _idx(str(lab), 8)
    x = _idx(str(img), 16).reshape(-1, 1, 28, 28)
    if len(x) != len(y):
        raise ConfigError(f"fashion-mnist: {img} holds {len(x)} images for {len(y)} labels")
    n = len(y) if limit is None else min(limit, len(y))
    base = 0 if split == "train" else 60000
    labels = y[:n].astype(np.int64)
    xs = torch.from_numpy(x[:n].astype(np.float32) / 255)
    if size != 28:
        import torch.nn.functional as F

        xs = F.interpolate(xs, size=(size, size), mode="bilinear", antialias=True).clamp_(0, 1)
    d = Dataset(
        x=xs,
        y=torch.from_numpy(labels),
        name=f"fashion-mnist-{split}" + (f"-{size}px" if size != 28 else ""),
        ids=torch.arange(base, base + n),
        meta={"label": [FASHION_CLASSES[i] for i in labels]},
        domain=Domain(0.0, 1.0, (1, size, size)),
        classes=list(FASHION_CLASSES),
    )
    return with_threshold_masks(d, mask_threshold) if masks else d


@datasets.register("image-folder")
def image_folder(
    root: str,
    size: int | list[int] = 64,
    channels: PositiveInt = 3,
    limit: PositiveInt | None = None,
    masks: str | None = None,
) -> Dataset:
    """Your own images: ``root/<class name>/*.png|jpg|jpeg``, resized to ``size`` (an int or
    ``[height, width]``, bilinear) as ``channels`` (1 = grey, 3 = RGB) images in [0, 1].

    Classes are the sorted subfolder names; examples are ordered by class then file name, and
    ``limit`` keeps the first ones. Metadata: ``label`` (class name) and ``file`` (path under root).
    ``masks``: a folder of object masks with the same relative paths (any image suffix; grey level
    / 255, bilinear resize) -> ``fields["mask"]``; a missing mask raises ``ConfigError``.
    """
    from PIL import Image, UnidentifiedImageError

    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"image-folder: {root!r} is not a directory")
    if channels not in (1, 3):
        raise ConfigError(f"image-folder: channels must be 1 or 3, got {channels!r}")
    _check_limit(limit, "image-folder")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
        raise ConfigError(
            f"image-folder: size must be a positive int or [height, width], got {size!r}"
        )
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    files = [
        (c, f)
        for c, name in enumerate(classes)
        for f in sorted((base / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise ConfigError(f"image-folder: no .png/.jpg/.jpeg files in subfolders of {root!r}")
    files = files[:limit] if limit is not None else files
    arr = np.empty((len(files), hw[0], hw[1], channels), dtype=np.uint8)
    for i, (_, f) in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB" if channels == 3 else "L").resize(hw[::-1], Image.BILINEAR)
                arr[i] = np.asarray(im).reshape(hw[0], hw[1], channels)
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(f"image-folder: cannot read image {f}: {e}") from None
    labels = [c for c, _ in files]
    fields = (
        {} if masks is None else {"mask": _read_masks(Path(masks), base, [f for _, f in files], hw)}
    )
    return Dataset(
        x=torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255,
        y=torch.tensor(labels, dtype=torch.int64),
        name=f"image-folder-{base.name}",
        meta={
            "label": [classes[c] for c in labels],
            "file": [str(f.relative_to(base)) for _, f in files],
        },
        domain=Domain(0.0, 1.0, (channels, hw[0], hw[1])),
        classes=classes,
        fields=fields,
    )


def _read_masks(root: Path, base: Path, files: list[Path], hw: tuple[int, ...]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), 1, hw[0], hw[1]), dtype=np.float32)
    for i, f in enumerate(files):
        rel = f.relative_to(base)
        found = [p for p in (root / rel.parent).glob(f"{rel.stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
        if not found:
            raise ConfigError(
                f"image-folder: no mask for {rel} under {root} (same path, image suffix)"
            )
        try:
            with Image.open(found[0]) as im:
                out[i, 0] = np.asarray(im.convert("L").resize(hw[::-1], Image.BILINEAR)) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise ConfigError(f"image-folder: cannot read mask {found[0]}: {e}") from None
    return torch.from_numpy(out)


def with_threshold_masks(d: Dataset, threshold: float = 0.1) -> Dataset:
    """``d`` with ``fields["mask"]`` derived by threshold: pixels whose grey level differs from the
    median grey level of the image border by more than ``threshold`` (flat-background images such
    as digits and Fashion-MNIST)."""
    from robustlab.perturbations.image.attributes import object_mask

    if not isinstance(d.x, torch.Tensor) or d.x.dim() != 4:
        raise ConfigError(f"object masks need [N, C, H, W] images; {d.name!r} has none")
    if not 0 <= threshold < 1:
        raise ConfigError(f"mask threshold must lie in [0, 1), got {threshold!r}")
    mask = object_mask(d.x, threshold)
    return Dataset(d.x, d.y, d.name, d.ids, d.meta, d.domain, d.classes, {**d.fields, "mask": mask})


@datasets.register("object-masks")
def object_masks(data: dict[str, Any], threshold: Rate = 0.1) -> Dataset:
    """Any registered image dataset (``data`` = ``{"name": ..., **params}``) with threshold-derived
    object masks in ``fields["mask"]``; e.g. ``{"name": "digits", "split": "test"}``."""
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"object-masks: data must be a dict with 'name', got {data!r}")
    params = {k: v for k, v in data.items() if k != "name"}
    return with_threshold_masks(datasets.create(data["name"], params), threshold)
