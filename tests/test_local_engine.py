"""The local engine's determinism: runs are reproducible under their seed, sharding changes
nothing per example, and another seed changes only the random probes.

Needs no optional package (always runs); tests/test_engines.py compares the Ray engine with these
records and skips without ``ray``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from robustlab.runner import LocalEngine, run_suite
from robustlab.store import Store


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def suite(small_suite):
    # 3 shards x (clean + 2 noise + fgsm + pgd) = 15 units, with random draws in noise and PGD
    return small_suite(name="engines", shard_size=128)


def _run(suite, location: Path, engine=None, resume: bool = True) -> tuple[pd.DataFrame, dict]:
    st = Store(location)
    rid = run_suite(suite, st, engine=engine or LocalEngine(), resume=resume, progress=False)
    info = st.run_info(rid)
    records = st.records(rid, expand=False)  # exact JSON text of extras and meta
    st.engine.dispose()
    return records, info


@pytest.fixture(scope="module")
def local_records(suite, workdir: Path, canonical_records) -> pd.DataFrame:
    records, info = _run(suite, workdir / "local.db")
    assert info["status"] == "complete"
    assert len(info["units"]) == info["n_units"] == 15
    assert info["environment"]["engine"] == "local"
    return canonical_records(records)


def test_local_runs_are_deterministic(
    suite, tmp_path: Path, local_records: pd.DataFrame, canonical_records
) -> None:
    st = Store(tmp_path / "store.db")
    a = run_suite(suite, st, resume=False, progress=False)
    b = run_suite(suite, st, resume=False, progress=False)
    assert a != b
    ra, rb = (
        canonical_records(st.records(a, expand=False)),
        canonical_records(st.records(b, expand=False)),
    )
    st.engine.dispose()
    pd.testing.assert_frame_equal(ra, rb, check_exact=True)
    pd.testing.assert_frame_equal(ra, local_records, check_exact=True)


@pytest.mark.parametrize(("shard_size", "n_shards"), [(50, 8), (360, 1)])
def test_results_do_not_depend_on_shard_size(
    small_suite,
    shard_size: int,
    n_shards: int,
    tmp_path: Path,
    local_records: pd.DataFrame,
    canonical_records,
) -> None:
    suite = small_suite(name="engines", shard_size=shard_size)
    records, info = _run(suite, tmp_path / "store.db")
    assert info["n_units"] == 5 * n_shards
    pd.testing.assert_frame_equal(canonical_records(records), local_records, check_exact=True)


def test_seed_changes_random_probes_only(
    small_suite, tmp_path: Path, local_records: pd.DataFrame, canonical_records
) -> None:
    # the comparisons above are meaningful: another seed draws other noise and PGD starts ...
    records, _ = _run(small_suite(name="engines", seed=1), tmp_path / "store.db")
    other = canonical_records(records)
    noise = other["probe"] == "gaussian_noise"
    assert not other.loc[noise, "pred"].equals(local_records.loc[noise, "pred"])
    # ... while deterministic probes (clean, FGSM) do not change
    for probe in ("clean", "fgsm"):
        sel = other["probe"] == probe
        pd.testing.assert_frame_equal(other[sel], local_records[sel], check_exact=True)
