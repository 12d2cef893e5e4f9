"""Image data sources on the real files: Debian's Fashion-MNIST and an image folder."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import datasets
from robustlab.data.images import FASHION_ROOT

needs_fashion = pytest.mark.skipif(
    not Path(FASHION_ROOT, "t10k-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist",
)


@needs_fashion
def test_fashion_mnist_test_split_matches_idx_files() -> None:
    d = datasets.create("fashion-mnist", {"split": "test"})
    assert d.x.shape == (10000, 1, 28, 28) and d.y.shape == (10000,)
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    # independent read of the IDX header (magic 2051, dims) and the first image
    with gzip.open(Path(FASHION_ROOT, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read(16 + 784)
    assert int.from_bytes(raw[:4], "big") == 2051 and int.from_bytes(raw[4:8], "big") == 10000
    first = np.frombuffer(raw[16:], np.uint8).reshape(28, 28) / 255
    assert np.allclose(d.x[0, 0].numpy(), first)
    assert torch.bincount(d.y).tolist() == [1000] * 10  # the test split is balanced
    assert d.meta["label"][0] == d.classes[int(d.y[0])] == "ankle boot"
    assert d.ids is not None and int(d.ids[0]) == 60000


@needs_fashion
def test_fashion_mnist_limit_and_train() -> None:
    d = datasets.create("fashion-mnist", {"split": "train", "limit": 50})
    assert len(d) == 50 and d.ids is not None and d.ids.tolist() == list(range(50))
    assert d.domain is not None and d.domain.shape == (1, 28, 28)
    assert len(d.meta["label"]) == 50


def test_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        datasets.create("fashion-mnist", {"root": str(tmp_path)})
    with pytest.raises(ConfigError, match="split"):
        datasets.create("fashion-mnist", {"split": "val"})
    with pytest.raises(ConfigError, match="limit"):
        datasets.create("fashion-mnist", {"limit": 0})


def test_image_folder_real_photos(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    for cls, photos in {
        "cat": [data.chelsea()],
        "mug": [data.coffee()],
        "grey": [data.camera()],
    }.items():
        (tmp_path / cls).mkdir()
        for i, p in enumerate(photos):
            Image.fromarray(p).save(tmp_path / cls / f"{i}.{'jpg' if cls == 'mug' else 'png'}")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    d = datasets.create("image-folder", {"root": str(tmp_path), "size": [24, 32]})
    assert d.x.shape == (3, 3, 24, 32) and d.classes == ["cat", "grey", "mug"]
    assert d.y.tolist() == [0, 1, 2] and d.meta["file"] == ["cat/0.png", "grey/0.png", "mug/0.jpg"]
    ref = np.asarray(Image.fromarray(data.chelsea()).resize((32, 24), Image.BILINEAR)) / 255
    assert np.allclose(d.x[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    g = datasets.create("image-folder", {"root": str(tmp_path), "size": 16, "channels": 1})
    assert g.x.shape == (3, 1, 16, 16) and g.domain is not None and g.domain.shape == (1, 16, 16)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        datasets.create("image-folder", {"root": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="no .png"):
        datasets.create("image-folder", {"root": str(tmp_path)})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match="broken.png"):
        datasets.create("image-folder", {"root": str(tmp_path)})
    with pytest.raises(ConfigError, match="channels"):
        datasets.create("image-folder", {"root": str(tmp_path), "channels": 2})
