"""Data and model creation are shared, not repeated (issue 22): correctness of the caches.

- scikit-learn's digits come from an on-disk array cache keyed by content (split, seed, library
  versions): the cached split equals scikit-learn's own, and a warm process imports no sklearn;
- a cached model factory loads no training data;
- a run of N units creates its dataset once and each model replicate once;
- records are identical whether the data came from scikit-learn or from the cache.

Timings are measured by benchmarks/demo_vs_script.py and benchmarks/runner_overhead.py, not here.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import robustlab.core.paths
import robustlab.runner.context as context_mod
from robustlab.core.registry import datasets, models
from robustlab.runner import run_suite
from robustlab.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sklearn_digits(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits split computed directly with scikit-learn (the reference for the cache)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    ids = np.arange(len(y))
    tr, te = train_test_split(ids, test_size=0.2, random_state=0, stratify=y)
    ids = np.sort(tr if split == "train" else te)
    return x[ids], y[ids], ids


@pytest.fixture
def data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty array cache for this test (the trained-model cache stays the shared one)."""
    root = tmp_path / "cache"
    monkeypatch.setattr(robustlab.core.paths, "cache_dir", lambda: root)
    return root / "data"


@pytest.fixture
def fresh_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process context: nothing loaded yet in this 'process'."""
    monkeypatch.setattr(context_mod, "_PROCESS_CONTEXT", None)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts calls of the ``digits`` data source (by split) and ``digits-mlp`` model factory."""
    calls: Counter[str] = Counter()
    digits, mlp = datasets.get("digits"), models.get("digits-mlp")

    def counted_digits(**kw: Any) -> Any:
        calls[f"digits-{kw.get('split', 'test')}"] += 1
        return digits(**kw)

    def counted_mlp(**kw: Any) -> Any:
        calls[f"mlp-{kw.get('seed', 0)}"] += 1
        return mlp(**kw)

    counted_digits.__signature__ = inspect.signature(digits)  # type: ignore[attr-defined]
    counted_mlp.__signature__ = inspect.signature(mlp)  # type: ignore[attr-defined]
    monkeypatch.setitem(datasets._items, "digits", counted_digits)
    monkeypatch.setitem(models._items, "digits-mlp", counted_mlp)
    return calls


def test_digits_cache_equals_scikit_learn(data_cache: Path) -> None:
    for split in ("test", "train"):
        x, y, ids = _sklearn_digits(split)
        built = datasets.create("digits", {"split": split})  # cold: built and written
        cached = datasets.create("digits", {"split": split})  # warm: read back from disk
        for d in (built, cached):
            assert isinstance(d.x, torch.Tensor) and isinstance(d.y, torch.Tensor)
            assert d.x.dtype == torch.float32 and d.x.is_contiguous()
            assert np.array_equal(d.x.numpy(), x) and np.array_equal(d.y.numpy(), y)
            assert d.ids is not None and np.array_equal(d.ids.numpy(), ids)
            assert d.meta["label"] == [str(v) for v in y]
            assert all(type(v) is str for col in d.meta.values() for v in col)
        assert built.meta == cached.meta and cached.name == f"digits-{split}"
        assert cached.x.data_ptr() != built.x.data_ptr()  # fresh arrays, never shared
    assert len(list(data_cache.glob("digits-*.npz"))) == 2
    assert not list(data_cache.glob("*.tmp*"))


def test_photos_cache_equals_direct_resize(data_cache: Path) -> None:
    pytest.importorskip("skimage")
    from robustlab.data.photos import PHOTOS, _load, center_crop_resize

    ref = torch.stack([center_crop_resize(_load(n), 32) for n in PHOTOS])
    built = datasets.create("skimage-photos", {"size": 32})
    cached = datasets.create("skimage-photos", {"size": 32})
    assert torch.equal(built.x, ref) and torch.equal(cached.x, ref)
    assert cached.meta == built.meta and torch.equal(cached.y, built.y)
    sub = datasets.create("skimage-photos", {"size": 32, "photos": ["coffee"]})  # its own entry
    assert torch.equal(sub.x, ref[1:2]) and len(list(data_cache.glob("skimage-photos-*"))) == 2


def test_corrupt_cache_entry_is_rebuilt(data_cache: Path) -> None:
    ref = datasets.create("digits", {"split": "test"})
    (entry,) = data_cache.glob("digits-*.npz")
    entry.write_bytes(b"not a zip file")
    again = datasets.create("digits", {"split": "test"})
    assert torch.equal(again.x, ref.x) and again.meta == ref.meta
    assert entry.stat().st_size > 1000  # rewritten
    datasets.create("digits", {"split": "train"})
    (other,) = set(data_cache.glob("digits-*.npz")) - {entry}
    entry.write_bytes(other.read_bytes())  # a readable entry of another key: not used
    again = datasets.create("digits", {"split": "test"})
    assert torch.equal(again.x, ref.x) and again.meta == ref.meta


def test_warm_digits_import_no_sklearn() -> None:
    datasets.create("digits", {"split": "test"})  # the shared cache holds the entry now
    code = (
        "import sys; from robustlab.data.sources import digits; d = digits(split='test'); "
        "print(len(d), 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["360", "False"]


def test_cached_model_loads_no_training_data(counted: Counter[str]) -> None:
    models.create("digits-mlp", {"seed": 0})  # trains on a cold cache
    counted.clear()
    datasets.get("digits")  # the counter wraps the registry's entry
    net = models.get("digits-mlp")(seed=0)
    assert net.num_classes == 10 and counted["digits-train"] == 0


def test_run_creates_data_and_models_once(
    tmp_path: Path, counted: Counter[str], fresh_context: None, small_suite: Callable[..., Any]
) -> None:
    suite = small_suite(replicates=(0, 1), noise_levels=(1, 3), pgd_steps=2)
    models.create("digits-mlp", {"seed": 1})  # trained outside the count
    counted.clear()
    st = Store(tmp_path / "s.db")
    rid = run_suite(suite, st, progress=False)
    assert st.run_info(rid)["n_units"] == 30  # 2 replicates x 3 shards x 5 probe levels
    assert counted == Counter({"digits-test": 1, "mlp-0": 1, "mlp-1": 1})
    counted.clear()
    run_suite(suite, st, resume=False, progress=False)  # a second run in the same process
    assert counted == Counter()


def test_records_identical_with_and_without_data_cache(
    tmp_path: Path,
    data_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    small_suite: Callable[..., Any],
    canonical_records: Callable[[Any], Any],
) -> None:
    suite = small_suite(noise_levels=(3,), pgd_steps=2)
    frames = []
    for i in range(2):  # cold: built with scikit-learn; warm: read from the array cache
        monkeypatch.setattr(context_mod, "_PROCESS_CONTEXT", None)
        assert bool(list(data_cache.glob("digits-*.npz"))) == (i == 1)
        st = Store(tmp_path / f"s{i}.db")
        rid = run_suite(suite, st, progress=False)
        frames.append(canonical_records(st.records(rid, expand=False)))
    assert len(frames[0]) == 360 * 4
    import pandas.testing as pdt

    pdt.assert_frame_equal(frames[0], frames[1], check_exact=True)


def test_progress_bar_off_terminal_starts_no_redraw_thread(small_suite: Callable[..., Any]) -> None:
    """Output to a pipe or file shows the bar once at the end: no thread redraws it meanwhile
    (each redraw took the interpreter from the model's thread)."""
    import threading

    from robustlab.runner.plan import data_key, plan
    from robustlab.runner.runner import _progress

    suite = small_suite()
    units = plan(suite, {data_key(suite.data): 3})
    redrawing = []

    def results() -> Any:
        for u in units:
            threads = threading.enumerate()
            redrawing.append(any(type(t).__name__ == "_RefreshThread" for t in threads))
            yield u, {}, None, 0.0

    assert [r[0] for r in _progress(results(), units, True, "r1")] == units
    assert len(redrawing) == 15 and not any(redrawing)


def test_cli_run_checks_the_models_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_suite: Callable[..., Any]
) -> None:
    """``robustlab run`` checks the models before it opens the store and hands the fingerprints
    to ``run_suite``, which does not repeat the model stage; the stored fingerprints are what the
    check returns."""
    import yaml
    from typer.testing import CliRunner

    import robustlab.runner.runner as runner_mod
    import robustlab.runner.validation as validation_mod
    from robustlab.cli import app
    from robustlab.runner.context import process_context

    suite = small_suite(noise_levels=(1,), fgsm_eps=(), pgd_eps=())
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite.model_dump(mode="json")))
    calls: list[str] = []
    real = validation_mod.validate_models

    def counting(s: Any, ctx: Any) -> dict[str, str]:
        calls.append(s.name)
        return real(s, ctx)

    monkeypatch.setattr(validation_mod, "validate_models", counting)
    monkeypatch.setattr(runner_mod, "validate_models", counting)
    store = tmp_path / "s.db"
    args = ["run", str(tmp_path / "suite.yaml"), "--store", str(store), "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    assert calls == [suite.name]
    st = Store(store)
    try:
        assert st.run_info(st.resolve("latest"))["fingerprints"] == real(suite, process_context())
    finally:
        st.close()
    run_suite(suite, Store(tmp_path / "api.db"), progress=False)  # the API still checks them
    assert calls == [suite.name, suite.name]
