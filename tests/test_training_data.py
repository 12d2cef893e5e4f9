"""Training on user data (image folders, npz arrays), at any image size, and from a pretrained base.

Real data: Fashion-MNIST images written to a folder of PNG files and to an ``.npz`` file in
``tmp_path``, trained through the ``robustlab train`` CLI and the Python API on sizes other than
the built-in 8x8 / 28x28 (16x16 and 20x20 ``small-cnn`` bases); shape and file errors name the data
and the base. The slow test fine-tunes the pretrained EfficientNet-Lite0's classifier head on the
scikit-image photos with the spec form of issue 17 (``{name: trained, params: {base: {name:
efficientnet-lite0}, ...}}``), the frozen backbone (BatchNorm included) bit-identical afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import robustlab
from robustlab.cli import app
from robustlab.core.errors import ConfigError, DomainError
from robustlab.core.registry import datasets, models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = {1: "trouser", 7: "sneaker", 8: "bag"}  # three Fashion-MNIST classes


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One model cache for the module: models trained by one test are cache hits in the next."""
    root = tmp_path_factory.mktemp("train-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTLAB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``train/<class>/*.png`` (60 per class) and ``test/<class>/*.png`` (20 per class): 28x28
    grey Fashion-MNIST images written as PNG files with PIL."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    d = datasets.create("fashion-mnist", {"split": "train", "limit": 2000})
    for label, name in CLASSES.items():
        idx = torch.nonzero(d.y == label).flatten()[:80]
        for i, j in enumerate(idx.tolist()):
            split = "train" if i < 60 else "test"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            img = (d.x[j, 0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(img, mode="L").save(root / split / name / f"{j:05d}.png")
    return root / "train", root / "test"


def folder_spec(root: Path, epochs: int = 4, **base: Any) -> dict[str, Any]:
    return {
        "base": {"name": "small-cnn", "params": {"side": 16, "num_classes": 3, **base}},
        "data": {"name": "image-folder", "params": {"root": str(root), "size": 16, "channels": 1}},
        "trainer": {"name": "standard", "params": {"lr": 3e-3, "batch_size": 32}},
        "epochs": epochs,
        "holdout": 30,
    }


def test_image_folder_at_16x16_trains_through_the_cli(
    cache: Path, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    """``robustlab train SPEC.yaml`` on a folder of PNG files resized to 16x16 (no built-in size):
    the held-out and test accuracy are far above chance (1/3), and the exported TorchScript model
    equals the Python API's model (the same spec: a cache hit)."""
    train_dir, test_dir = folders
    spec = folder_spec(train_dir)
    test_data = {
        "name": "image-folder",
        "params": {"root": str(test_dir), "size": 16, "channels": 1},
    }
    (tmp_path / "spec.yaml").write_text(json.dumps({**spec, "evaluate": {"data": test_data,
                                                    "eps": 0.05, "steps": 5}}))  # fmt: skip
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["train", str(tmp_path / "spec.yaml"), "--out", str(out), "--no-progress"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "before" in r.output and "after" in r.output and "(60 examples)" in r.output
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["train_examples"] == 150 and prov["holdout_examples"] == 30
    assert prov["history"][-1]["clean_acc"] > 0.85, prov["history"]
    clf = robustlab.train(spec)  # cache hit: the model the CLI trained
    test = datasets.create(test_data["name"], test_data["params"])
    assert test.x.shape == (60, 1, 16, 16)
    logits = clf.logits(test.x)
    assert float((logits.argmax(1) == test.y).float().mean()) > 0.85
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    assert torch.allclose(scripted(test.x), logits, atol=1e-5)


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """800 Fashion-MNIST images as uint8 ``[N, 20, 20]`` (central crop) and labels in an npz."""
    d = datasets.create("fashion-mnist", {"split": "train", "limit": 800})
    x = (d.x[:, 0, 4:24, 4:24].numpy() * 255).round().astype(np.uint8)
    y = d.y.numpy()
    path = tmp_path_factory.mktemp("npz") / "fm20.npz"
    np.savez(path, x=x, y=y)
    return path, x, y


def test_npz_uint8_grey_images_at_20x20_train_through_the_api(
    cache: Path, npz_file: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    """An npz of uint8 ``[N, H, W]`` images is read as ``[N, 1, H, W]`` floats ``x / 255``; a
    20x20 ``small-cnn`` trained on it via ``robustlab.train`` and as a ``trained`` model spec
    (same model, cached) reaches held-out accuracy far above chance (0.1)."""
    path, x, y = npz_file
    d = datasets.create("npz", {"path": str(path)})
    assert d.x.shape == (800, 1, 20, 20) and d.x.dtype == torch.float32
    assert torch.equal(d.x[:, 0], torch.from_numpy(x).float() / 255)
    assert torch.equal(d.y, torch.from_numpy(y).long()) and d.domain.shape == (1, 20, 20)
    spec = {
        "base": {"name": "small-cnn", "params": {"side": 20}},
        "data": {"name": "npz", "params": {"path": str(path)}},
        "trainer": {"name": "standard", "params": {"lr": 3e-3, "batch_size": 64}},
        "epochs": 3,
        "holdout": 200,
    }
    clf = robustlab.train(spec)
    hist = clf.provenance["history"]
    assert hist[-1]["clean_acc"] > 0.6 and hist[-1]["train_loss"] < hist[0]["train_loss"], hist
    again = models.create("trained", spec)  # the spec form: the cached model
    assert torch.equal(again.logits(d.x[:16]), clf.logits(d.x[:16]))


@pytest.mark.parametrize("base", ["small-cnn", "mlp"])
def test_non_square_images_train_with_height(cache: Path, tmp_path: Path, base: str) -> None:
    """Non-square 20x24 Fashion-MNIST crops train on a base given ``side: 24, height: 20`` (the
    domain is ``(1, 20, 24)``) to held-out accuracy far above chance (0.1)."""
    d = datasets.create("fashion-mnist", {"split": "train", "limit": 600})
    np.savez(tmp_path / "fm20x24.npz", x=d.x[:, 0, 4:24, 2:26].numpy(), y=d.y.numpy())
    spec = {
        "base": {"name": base, "params": {"side": 24, "height": 20}},
        "data": {"name": "npz", "params": {"path": str(tmp_path / "fm20x24.npz")}},
        "trainer": {"name": "standard", "params": {"lr": 3e-3, "batch_size": 64}},
        "epochs": 3,
        "holdout": 150,
    }
    clf = robustlab.train(spec)
    assert tuple(clf.domain.shape) == (1, 20, 24)
    assert clf.provenance["history"][-1]["clean_acc"] > 0.5, clf.provenance["history"]


def test_wrong_shapes_and_bad_files_give_clear_errors(
    cache: Path, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    train_dir, _ = folders
    # RGB images for a grey base: the error names the data and the base, before any training
    rgb = folder_spec(train_dir)
    rgb["data"]["params"]["channels"] = 3
    with pytest.raises(DomainError, match=r"data 'image-folder' for base model 'small-cnn'.*\(3, 16, 16\)"):  # fmt: skip
        robustlab.train(rgb)
    # non-square 20x24 images on a square base (small-cnn's height defaults to side)
    x = np.random.default_rng(0).random((40, 20, 24)).astype(np.float32)
    np.savez(tmp_path / "wide.npz", x=x, y=np.arange(40) % 3)
    wide = {"base": {"name": "small-cnn", "params": {"side": 24}},
            "data": {"name": "npz", "params": {"path": str(tmp_path / "wide.npz")}}}  # fmt: skip
    with pytest.raises(DomainError, match=r"data 'npz' for base model 'small-cnn'.*\(1, 20, 24\)"):
        robustlab.train(wide)
    # three classes in the folder, a two-class base
    with pytest.raises(ConfigError, match=r"labels 0\.\.2.*'small-cnn' has 2 classes"):
        robustlab.train(folder_spec(train_dir, num_classes=2))
    # pickled object arrays are refused (allow_pickle=False), as are non-class labels
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2))
    with pytest.raises(ConfigError, match="obj.npz.*allow_pickle=False"):
        datasets.create("npz", {"path": str(tmp_path / "obj.npz")})
    np.savez(tmp_path / "y2d.npz", x=x, y=np.zeros((40, 2), dtype=np.int64))
    with pytest.raises(ConfigError, match=r"'y' must be \[N\] integer class ids"):
        datasets.create("npz", {"path": str(tmp_path / "y2d.npz")})
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match="junk.npz"):
        datasets.create("npz", {"path": str(tmp_path / "junk.npz")})
    # train_only naming no parameter of the base
    bad = folder_spec(train_dir)
    bad["trainer"]["params"]["train_only"] = ["classifier"]
    with pytest.raises(ConfigError, match=r"train_only \['classifier'\].*features\.0.*head\.1"):
        robustlab.train(bad)


def test_train_only_trains_the_head_and_keeps_frozen_batchnorm_in_eval(
    cache: Path, folders: tuple[Path, Path]
) -> None:
    """``train_only: [head]`` on a BatchNorm CNN: the feature extractor's weights *and* its
    BatchNorm running statistics are bit-identical after training (frozen parts run in eval
    mode); the head changed and still learned the task."""
    train_dir, _ = folders
    spec = folder_spec(train_dir, epochs=3)
    spec["trainer"]["params"]["train_only"] = ["head"]
    base = models.create("small-cnn", spec["base"]["params"])
    clf = robustlab.train(spec)
    before, after = base.module.state_dict(), clf.module.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same == (not k.startswith("head.")), k  # BN running_mean/var included
    assert clf.provenance["history"][-1]["clean_acc"] > 0.7, clf.provenance["history"]


@pytest.mark.slow
def test_efficientnet_lite0_head_fine_tuned_on_photos(cache: Path) -> None:
    """The issue's spec form with the pretrained EfficientNet-Lite0 as ``base``: ``standard``
    training of its classifier head only (``train_only: [net._fc]``) on the six scikit-image
    photos. The training loss falls, every photo ends up classified as labelled (the cat the
    pretrained model calls class 285 included), and the backbone -- every weight and every
    BatchNorm running statistic -- is bit-identical to the pretrained one."""
    pytest.importorskip("efficientnet_lite_pytorch")
    spec = {
        "name": "trained",
        "params": {
            "base": {"name": "efficientnet-lite0"},
            "data": {"name": "skimage-photos"},
            "trainer": {"name": "standard",
                        "params": {"lr": 3e-3, "batch_size": 6, "train_only": ["net._fc"]}},
            "epochs": 4,
            "holdout": 0,
        },
    }  # fmt: skip
    photos = datasets.create("skimage-photos")
    pre = models.create("efficientnet-lite0")
    with torch.no_grad():
        pre_pred = pre.logits(photos.x).argmax(1)
    assert not torch.equal(pre_pred, photos.y)  # the pretrained model misses one photo
    clf = robustlab.train(spec)
    hist = clf.provenance["history"]
    assert len(hist) == 4 and hist[-1]["train_loss"] < hist[0]["train_loss"], hist
    with torch.no_grad():
        assert torch.equal(clf.logits(photos.x).argmax(1), photos.y)
    before, after = pre.module.state_dict(), clf.module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"net._fc.weight", "net._fc.bias"}
