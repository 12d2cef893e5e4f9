"""Shared fixtures: small real suites, and stores on SQLite and PostgreSQL.

PostgreSQL: ``$ROBUSTLAB_TEST_PG_URL`` (a SQLAlchemy URL, as printed by ``scripts/pg.sh start``), else
a throwaway server started once per session with ``scripts/pg.sh`` (and stopped at the end); when
neither works, the postgres-parametrized tests are skipped with the reason. Each test gets its own
fresh database, dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from robustlab.runner import ComponentSpec, ModelSpec, ProbeSpec, Suite

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "ROBUSTLAB_TEST_PG_URL"


# suites ---------------------------------------------------------------------------------------
def make_small_suite(
    *,
    name: str = "small",
    model: str = "digits-mlp",
    replicates: Sequence[int] = (0,),
    shard_size: int = 128,
    seed: int = 0,
    noise_levels: Sequence[float] = (1, 3),
    fgsm_eps: Sequence[float] = (0.1,),
    pgd_eps: Sequence[float] = (0.1,),
    pgd_steps: int = 5,
) -> Suite:
    """A real suite on the digits test split (360 examples): clean, gaussian noise, FGSM and PGD.

    With the defaults: 3 shards x (1 clean + 2 noise + 1 fgsm + 1 pgd) = 15 units per replicate.
    An empty level list leaves that probe out.
    """
    probes = []
    if noise_levels:
        probes.append(
            ProbeSpec(kind="perturbation", name="gaussian_noise", levels=list(noise_levels))
        )
    if fgsm_eps:
        probes.append(ProbeSpec(kind="attack", name="fgsm", levels=list(fgsm_eps)))
    if pgd_eps:
        probes.append(
            ProbeSpec(kind="attack", name="pgd", params={"steps": pgd_steps}, levels=list(pgd_eps))
        )
    return Suite(
        name=name,
        models=[ModelSpec(name=model, replicates=list(replicates))],
        data=ComponentSpec(name="digits", params={"split": "test"}),
        probes=probes,
        seed=seed,
        shard_size=shard_size,
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``): on a
    loaded 2-core machine two OpenMP threads ran up to 100x slower; results do not change."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def small_suite() -> Callable[..., Suite]:
    """Factory of small real suites; see :func:`make_small_suite` for the keywords."""
    return make_small_suite


@pytest.fixture
def pytorch_ood(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pytorch-ood's submodules importable without its package ``__init__``, which imports
    torchvision (not installable beside our torch): its detectors and metric functions do not use
    it. ``scripts/setup.sh --dev`` installs pytorch-ood with ``--no-deps``; skipped without it."""
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("pytorch_ood")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pytorch-ood is not installed (scripts/setup.sh --dev installs it)")
    pkg = types.ModuleType("pytorch_ood")
    pkg.__path__ = list(spec.submodule_search_locations)
    monkeypatch.setitem(sys.modules, "pytorch_ood", pkg)
    for name in [m for m in sys.modules if m.startswith("pytorch_ood.")]:
        monkeypatch.delitem(sys.modules, name)


# records --------------------------------------------------------------------------------------
RECORD_KEY = ["model", "replicate", "probe", "kind", "level", "example_id"]


def canonical(records: pd.DataFrame) -> pd.DataFrame:
    """Records in a run-independent form for exact comparison: no unit keys or ids, sorted by
    (model, replicate, probe, kind, level, example), columns sorted."""
    df = records.drop(columns=[c for c in ("unit_key", "id", "run_id") if c in records])
    df = df.sort_values(RECORD_KEY, kind="mergesort").reset_index(drop=True)
    return df[sorted(df.columns)]


@pytest.fixture(scope="session")
def canonical_records() -> Callable[[pd.DataFrame], pd.DataFrame]:
    """``canonical_records(store.records(run_id))``: records sorted and stripped of ids."""
    return canonical


# PostgreSQL -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server for tests (skips the test if none can be had)."""
    url = os.environ.get(PG_ENV)
    script = ROOT / "scripts" / "pg.sh"
    # a server of this session's own, so that concurrent sessions do not stop each other's
    env = {**os.environ, "ROBUSTLAB_PG_DIR": f"/tmp/robustlab-pg-pytest-{os.getpid()}"}
    started = False
    if not url:
        if not script.is_file():
            pytest.skip(f"no PostgreSQL server could be started: {script} is missing")
        try:
            res = subprocess.run(
                ["bash", str(script), "start"], capture_output=True, text=True, timeout=180, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            _pg_stop(script, env)
            pytest.skip(f"no PostgreSQL server could be started: {e}")
        if res.returncode != 0 or not res.stdout.strip():
            _pg_stop(script, env)  # remove what a failed start left behind
            reason = res.stderr.strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
            pytest.skip(f"no PostgreSQL server could be started: {reason[0]}")
        url = res.stdout.strip().splitlines()[-1]
        started = True
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(url)
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.dispose()
    except Exception as e:  # noqa: BLE001 - any failure means: no usable server
        if started:
            _pg_stop(script, env)
        pytest.skip(f"no PostgreSQL server could be started: cannot connect to {url}: {e}")
    yield url
    if started:
        _pg_stop(script, env)


def _pg_stop(script: Path, env: dict[str, str]) -> None:
    if script.is_file():
        subprocess.run(["bash", str(script), "stop"], capture_output=True, env=env, timeout=120)


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    yield from _fresh_pg_database(pg_server_url)


def _fresh_pg_database(server_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    base = sa.make_url(server_url)
    name = f"rl_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


# stores ---------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store location: a SQLite file path, or a PostgreSQL URL (own database)."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
    else:
        server = request.getfixturevalue("pg_server_url")
        yield from _fresh_pg_database(server)


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    """An open :class:`robustlab.store.Store` on ``store_url`` (disposed afterwards)."""
    from robustlab.store import Store

    st = Store(store_url)
    yield st
    st.engine.dispose()
