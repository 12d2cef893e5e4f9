"""Issue 22 speed work on randomized smoothing changed no certificate.

The CERTIFY/PREDICT code before the speed-up (git commit ``c093608``: ``certify/smoothing.py`` and
``certify/smoothing_batch.py``) is loaded from git into temporary modules and run side by side with
the current code on real test digits and the noise-trained digits CNN: predictions, radii,
abstentions, counts and lower bounds must be bit-identical for the same seed, with the automatic
batch size/layout and with explicit batch sizes (full and partial batches, log flushes).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from robustlab.certify.smoothing import GaussianSmoothing
from robustlab.core.registry import datasets, models
from robustlab.core.rng import ExampleRNG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BEFORE = "c093608"  # the last commit before issue 22's smoothing changes
ROOT = Path(__file__).resolve().parents[1]


def _load(tmp: Path, name: str, source: str) -> ModuleType:
    path = tmp / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    def show(path: str) -> str:
        try:
            out = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=ROOT,
                                 capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            pytest.skip(f"needs the git history (commit {BEFORE})")
        return out.stdout

    tmp = tmp_path_factory.mktemp("old_smoothing")
    _load(tmp, "old_smoothing_batch", show("src/robustlab/certify/smoothing_batch.py"))
    src = show("src/robustlab/certify/smoothing.py")
    src = src.replace(
        "from robustlab.certify.smoothing_batch import", "from old_smoothing_batch import"
    )
    src = src.replace('@certifiers.register("smoothing")\n', "")  # already registered: the new one
    return _load(tmp, "old_smoothing", src)


@pytest.fixture(scope="module")
def setup() -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = datasets.get("digits")(split="test")
    assert d.ids is not None
    model = models.create("digits-cnn-noise", {"sigma": 0.25})
    return model, d.x[:12], d.y[:12], d.ids[:12]


@pytest.mark.parametrize("batch", ["auto", 37, 400])
def test_certify_and_predict_bit_identical_to_before(
    old: ModuleType, setup: Any, batch: Any
) -> None:
    model, x, y, ids = setup
    params = {"sigma": 0.25, "n0": 64, "n": 700, "alpha": 0.001, "batch_size": batch}
    new_c = GaussianSmoothing(**params).certify(model, x, y, rng=ExampleRNG.from_seed(3, ids))
    old_c = old.GaussianSmoothing(**params).certify(model, x, y, rng=ExampleRNG.from_seed(3, ids))
    for field in ("pred", "radius", "abstained"):
        assert torch.equal(getattr(new_c, field), getattr(old_c, field)), field
    assert new_c.extra.keys() == old_c.extra.keys()
    for key in old_c.extra:
        assert torch.equal(new_c.extra[key], old_c.extra[key]), key
    assert (new_c.radius > 0).sum() >= 6  # a real run: most test digits certify
    new_p = GaussianSmoothing(**params).predict(model, x, rng=ExampleRNG.from_seed(4, ids), n=300)
    old_p = old.GaussianSmoothing(**params).predict(
        model, x, rng=ExampleRNG.from_seed(4, ids), n=300
    )
    assert torch.equal(new_p, old_p)
