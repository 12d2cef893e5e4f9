"""Object masks from datasets reach the attribute-edit perturbations inside a suite: supplied masks
(an image folder with a mask folder), threshold masks (Fashion-MNIST, the ``object-masks`` wrapper
around digits), through ``robustlab.runner.run_suite`` down to the records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from robustlab.core.errors import ConfigError
from robustlab.core.records import frame
from robustlab.core.registry import datasets, models, perturbations
from robustlab.core.rng import ExampleRNG
from robustlab.perturbations.image.attributes import object_mask
from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite, run_suite
from robustlab.store import Store

N = 40


def run(tmp_path: Path, data: ComponentSpec, probes: list[ProbeSpec], name: str) -> pd.DataFrame:
    suite = Suite(name=name, models=[ModelSpec(name="digits-cnn")], data=data, probes=probes,
                  seed=0, shard_size=16)  # fmt: skip
    store = Store(tmp_path / f"{name}.db")
    df = frame(store.records(run_suite(suite, store, progress=False)))
    return df.sort_values(["probe", "level", "example_id"]).reset_index(drop=True)


def preds(df: pd.DataFrame, kind: str, probe: str | None = None) -> np.ndarray:
    sub = df[(df["kind"] == kind) & ((df["probe"] == probe) if probe else True)]
    return sub.sort_values("example_id")["pred"].astype(int).to_numpy()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 digits test images as 8x8 PNGs under <class>/, and all-white masks (object = image)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("masks")
    d = datasets.get("digits")(split="test")
    for i in range(N):
        img = (d.x[i, 0].numpy() * 255).round().astype(np.uint8)
        for sub, arr in (("img", img), ("mask", np.full_like(img, 255))):
            folder = root / sub / str(int(d.y[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / f"{i:03d}.png")
    return root / "img", root / "mask"


def test_supplied_masks_reach_perturbations_in_a_suite(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    img, mask = folders
    probes = [ProbeSpec(kind="perturbation", name="background_swap", params={"kind": "noise"},
                        levels=[1.0])]  # fmt: skip
    params = {"root": str(img), "size": 8, "channels": 1}
    with_masks = run(tmp_path, ComponentSpec(name="image-folder", params={**params, "masks": str(mask)}),
                     probes, "supplied")  # fmt: skip
    without = run(tmp_path, ComponentSpec(name="image-folder", params=params), probes, "threshold")
    assert len(with_masks) == len(without) == 2 * N  # clean + one level
    clean = preds(with_masks, "clean")
    assert (clean == with_masks[with_masks.kind == "clean"]["label"].astype(int)).mean() > 0.9
    # the supplied masks say "all object": swapping the background changes nothing
    assert np.array_equal(preds(with_masks, "perturbation"), clean)
    # threshold masks: the background becomes white noise and predictions change
    assert (preds(without, "perturbation") != preds(without, "clean")).mean() > 0.2
    assert "m.mask" not in with_masks  # masks are fields, not record metadata


def test_threshold_masks_from_the_dataset_in_a_suite(tmp_path: Path) -> None:
    data = ComponentSpec(name="object-masks", params={"data": {"name": "digits", "split": "test"},
                                                      "threshold": 0.3})  # fmt: skip
    probes = [ProbeSpec(kind="perturbation", name="object_rotate", levels=[45.0]),
              ProbeSpec(kind="perturbation", name="object_scale", levels=[0.4]),
              ProbeSpec(kind="perturbation", name="gaussian_noise", levels=[1])]  # fmt: skip
    df = run(tmp_path, data, probes, "wrapped")
    d = datasets.create("object-masks", data.params)
    assert len(df) == 4 * len(d)
    clf: Any = models.create("digits-cnn")
    rng = ExampleRNG.from_seed(0, d.ids)  # object edits use no randomness
    for name, level in (("object_rotate", 45.0), ("object_scale", 0.4)):
        p = perturbations.create(name)
        with torch.no_grad():
            supplied = clf.logits(p(d.x, level, rng, mask=d.fields["mask"])).argmax(1).numpy()
            default = clf.logits(p(d.x, level, rng)).argmax(1).numpy()
        got = preds(df, "perturbation", name)
        assert np.array_equal(got, supplied), name
        assert (got != default).sum() > 0, name  # threshold 0.3 masks, not the default 0.1
    acc = df.groupby("probe")["correct"].mean()
    assert acc["object_rotate"] < acc["clean"] - 0.1


def test_dataset_masks_and_bad_input(folders: tuple[Path, Path], tmp_path: Path) -> None:
    d = datasets.create("fashion-mnist", {"limit": 32, "masks": True})
    assert torch.equal(d.fields["mask"], object_mask(d.x, 0.1))
    assert 0.1 < float(d.fields["mask"].mean()) < 0.9
    sub = d.shard(1, 10)
    assert torch.equal(sub.fields["mask"], d.fields["mask"][10:20])
    img, _ = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no mask for"):
        datasets.create("image-folder", {"root": str(img), "size": 8, "channels": 1,
                                         "masks": str(empty)})  # fmt: skip
    with pytest.raises(ConfigError, match="parameter 'data' must be dict"):
        datasets.create("object-masks", {"data": "digits"})
    with pytest.raises(ConfigError, match="dict with 'name'"):
        datasets.create("object-masks", {"data": {"foo": 1}})
    with pytest.raises(ConfigError, match="field 'mask'"):
        type(d)(d.x, d.y, fields={"mask": torch.zeros(3, 1, 28, 28)})
