"""Built-in data sources (all offline): scikit-learn's digits, and user ``.npz`` arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.core.types import Domain, Fraction, PositiveInt, Seed
from robustlab.data.base import Dataset, cached_arrays


@datasets.register("digits")
def digits(
    split: str = "test", test_fraction: Fraction = 0.2, seed: Seed = 0, size: PositiveInt = 8
) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits as [N, 1, 8, 8] images in [0, 1].

    The split is stratified and fixed by ``seed``. Metadata: ``label`` (the digit) and ``ink``
    (mean pixel intensity tercile: light / medium / heavy), for slicing. ``size``: resize to
    ``size`` x ``size`` (bilinear; e.g. 28 to use the digits as an OOD set for Fashion-MNIST).
    """
    if split not in ("train", "test", "all"):
        raise ConfigError(f"digits split must be 'train', 'test' or 'all', got {split!r}")
    a = _digits_arrays(split, test_fraction, seed)
    x = torch.from_numpy(a["x"])
    if size != 8:
        import torch.nn.functional as F

        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp_(0, 1)
    return Dataset(
        x=x,
        y=torch.from_numpy(a["y"]),
        name=f"digits-{split}" + (f"-{size}px" if size != 8 else ""),
        ids=torch.from_numpy(a["ids"]),
        meta={"label": a["label"].tolist(), "ink": a["ink"].tolist()},
        domain=Domain(0.0, 1.0, (1, size, size)),
        classes=[str(i) for i in range(10)],
    )


def _digits_arrays(split: str, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """The split's arrays, cached on disk per scikit-learn version (:func:`cached_arrays`): a
    warm cache skips importing scikit-learn (~1 s) and the stratified split."""

    def build() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]
        y = d.target.astype(np.int64)
        ids = np.arange(len(y))
        if split != "all":
            tr, te = train_test_split(ids, test_size=test_fraction, random_state=seed, stratify=y)
            ids = np.sort(tr if split == "train" else te)
        ink = x.reshape(len(x), -1).mean(1)
        q1, q2 = np.quantile(ink, [1 / 3, 2 / 3])
        ink_level = np.where(ink < q1, "light", np.where(ink < q2, "medium", "heavy"))
        label = np.array([str(v) for v in y[ids]])
        return {"x": x[ids], "y": y[ids], "ids": ids, "label": label, "ink": ink_level[ids]}

    key = {"name": "digits", "split": split, "test_fraction": test_fraction, "seed": seed, "v": 1}
    return cached_arrays(key, build, packages=["scikit-learn"])


@datasets.register("npz")
def npz(path: str, x_key: str = "x", y_key: str = "y", lo: float = 0.0, hi: float = 1.0) -> Dataset:
    """Arrays from a ``.npz`` file (``x``: [N, ...] inputs in [lo, hi], ``y``: [N] class ids).

    Images: ``x`` as [N, C, H, W], or [N, H, W] (grey; read as [N, 1, H, W]), float in [lo, hi] or
    ``uint8`` (divided by 255 when [lo, hi] is the default [0, 1]). Loaded with
    ``allow_pickle=False``: a file holding pickled object arrays is refused. Any other array of
    length N becomes a metadata column.
    """
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"npz data file {path!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as f:
            if x_key not in f or y_key not in f:
                raise ConfigError(
                    f"{path}: needs arrays {x_key!r} and {y_key!r}, has {list(f.keys())}"
                )
            x, y = f[x_key], f[y_key]
            meta = {
                k: f[k].tolist() for k in f.files if k not in (x_key, y_key) and len(f[k]) == len(x)
            }
    except ConfigError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"npz data file {path!r} cannot be read as numeric arrays ({e}); object arrays are "
            "refused (allow_pickle=False): save numeric arrays with np.savez"
        ) from None
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"{path}: {y_key!r} must be [N] integer class ids for the {len(x)} inputs, got "
            f"shape {y.shape} dtype {y.dtype}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ConfigError(f"{path}: {x_key!r} must be numeric, got dtype {x.dtype}")
    scale = 255.0 if x.dtype == np.uint8 and (lo, hi) == (0.0, 1.0) else 1.0
    if x.ndim == 3:  # [N, H, W] grey images
        x = x[:, None]
    return Dataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / scale),
        torch.from_numpy(y.astype(np.int64)),
        name=p.stem,
        meta={k: [str(v) for v in vals] for k, vals in meta.items()},
        domain=Domain(lo, hi, tuple(x.shape[1:])),
    )
