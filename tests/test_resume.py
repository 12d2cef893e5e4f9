"""Kill and resume: a run killed (SIGKILL) or interrupted (Ctrl-C) at any moment resumes from its
finished units, and ends with exactly the records of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from robustlab.runner import Suite, run_suite
from robustlab.store import Store

# 2 replicates x 4 shards x (clean + noise + 2 pgd levels) = 32 units, a few seconds in all (PGD
# steps make units slow enough that a run can be caught half-way between group commits)
SUITE_YAML = """\
name: resume-test
seed: 3
model: {name: digits-mlp, replicates: [0, 1]}
data: {name: digits, params: {split: test}}
shard_size: 90
probes:
  - {kind: perturbation, name: gaussian_noise, levels: [2]}
  - {kind: attack, name: pgd, params: {steps: 300, early_stop: false}, levels: [0.1, 0.2]}
"""
N_UNITS = 32
TIMEOUT = 180


def _cli() -> list[str]:
    exe = shutil.which("robustlab", path=str(Path(sys.executable).parent))
    if exe:
        return [exe]
    return [sys.executable, "-c", "from robustlab.cli import main; main()"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def suite_file(workdir: Path) -> Path:
    path = workdir / "suite.yaml"
    path.write_text(SUITE_YAML)
    return path


@pytest.fixture(scope="module")
def baseline(suite_file: Path, workdir: Path, canonical_records) -> pd.DataFrame:
    """Records of an uninterrupted run of the suite in a fresh store (in this process)."""
    st = Store(workdir / "baseline.db")
    rid = run_suite(Suite.from_yaml(suite_file), st, progress=False)
    info = st.run_info(rid)
    assert info["status"] == "complete" and len(info["units"]) == N_UNITS
    df = canonical_records(st.records(rid, expand=False))
    st.engine.dispose()
    assert len(df) == 4 * 2 * 360
    return df


def _command(suite_file: Path, db: Path) -> list[str]:
    return [*_cli(), "run", str(suite_file), "--store", str(db), "--no-progress",
            "--out", str(db.parent / "reports")]  # fmt: skip


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as a terminal gives it. A SIGINT ignored by the test
    process (inherited from whatever started it, or left by a library) would be inherited, and a
    Python started with SIGINT ignored never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(suite_file: Path, db: Path) -> subprocess.Popen[bytes]:
    log = db.parent / f"{db.stem}.log"
    with open(log, "wb") as f:
        return subprocess.Popen(
            _command(suite_file, db), stdout=f, stderr=subprocess.STDOUT, preexec_fn=_default_sigint
        )


def _state(db: Path) -> dict[str, Any]:
    """Runs, units and per-unit record counts, read with plain sqlite3 (as another process would)."""
    con = sqlite3.connect(db, timeout=10)
    try:
        runs = con.execute("SELECT id, status, message, n_units FROM runs").fetchall()
        units = dict(con.execute("SELECT key, finished_at FROM units WHERE status = 'done'"))
        n_records = dict(con.execute("SELECT key, n_records FROM units").fetchall())
        counts = dict(con.execute("SELECT unit_key, n_records FROM record_blocks"))
    finally:
        con.close()
    return {"runs": runs, "done": units, "n_records": n_records, "counts": counts}


def _wait_partial(db: Path, proc: subprocess.Popen[bytes], min_done: int = 3) -> dict[str, Any]:
    """Poll the store until at least ``min_done`` (but not all) units are done."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (db.parent / f"{db.stem}.log").read_text()
            pytest.fail(f"the run ended (status {proc.returncode}) before it was stopped:\n{log}")
        if db.is_file():
            try:
                state = _state(db)
            except sqlite3.OperationalError:  # store being created
                state = None
            if state and min_done <= len(state["done"]) < N_UNITS:
                return state
        time.sleep(0.02)
    pytest.fail("the run did not finish any units in time")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Never leave a child behind when a test fails half-way."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _rerun(suite_file: Path, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [*_command(suite_file, db), *extra], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _final(db: Path, canonical_records) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    st = Store(db)
    try:
        runs = st.runs()
        info = st.run_info(runs["id"].iloc[0])
        return runs, canonical_records(st.records(info["id"], expand=False)), info
    finally:
        st.engine.dispose()


def _assert_consistent(state: dict[str, Any]) -> None:
    """Every finished unit has all its records; no unfinished unit has any (units are atomic)."""
    assert state["counts"] == {k: n for k, n in state["n_records"].items() if n}
    assert set(state["counts"]) <= set(state["done"])


# Ctrl-C, then SIGKILL, then completion -----------------------------------------------------------
@pytest.fixture(scope="module")
def stopped(suite_file: Path, workdir: Path) -> dict[str, Any]:
    """One store, three CLI runs of the suite: stopped with SIGINT (Ctrl-C) after a few units;
    rerun and killed with SIGKILL after a few more; rerun to completion."""
    db = workdir / "s.db"
    proc = _start(suite_file, db)
    try:
        _wait_partial(db, proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        _reap(proc)
    log = (workdir / "s.log").read_text()
    out = {"db": db, "int_returncode": proc.returncode, "int_output": log, "int_state": _state(db)}

    proc = _start(suite_file, db)
    try:
        _wait_partial(db, proc, min_done=len(out["int_state"]["done"]) + 3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _reap(proc)
    out["kill_returncode"] = proc.returncode
    out["kill_state"] = _state(db)
    st = Store(db)  # what `robustlab runs` / `show` display for the killed run
    out["kill_shown"] = st.runs()["status"].tolist()
    st.close()

    out["final"] = _rerun(suite_file, db)
    return out


def test_interrupted_run_is_marked_resumable(stopped: dict[str, Any]) -> None:
    state = stopped["int_state"]
    ((_, status, message, n_units),) = state["runs"]
    assert status == "interrupted" and n_units == N_UNITS
    assert "interrupted" in message and "resume" in message
    assert 0 < len(state["done"]) < N_UNITS
    _assert_consistent(state)


def test_interrupted_cli_exits_with_status_130(stopped: dict[str, Any]) -> None:
    assert stopped["int_returncode"] == 130, stopped["int_output"]
    assert "Traceback" not in stopped["int_output"]


def test_interrupted_cli_says_how_to_resume(stopped: dict[str, Any]) -> None:
    assert "rerun the same command to resume" in stopped["int_output"]


def test_rerun_resumes_and_a_killed_run_keeps_whole_units(stopped: dict[str, Any]) -> None:
    before, after = stopped["int_state"], stopped["kill_state"]
    assert stopped["kill_returncode"] == -signal.SIGKILL
    # the rerun continued the interrupted run (no new run) and skipped its finished units
    assert [r[0] for r in after["runs"]] == [before["runs"][0][0]]
    assert after["runs"][0][1] == "running"  # as stored: SIGKILL left no chance to update it
    assert stopped["kill_shown"] == ["interrupted"]  # but its owner is gone: shown interrupted
    assert len(before["done"]) < len(after["done"]) < N_UNITS
    assert all(after["done"][k] == t for k, t in before["done"].items())
    _assert_consistent(after)


def test_killed_run_resumes_to_the_records_of_an_uninterrupted_run(
    stopped: dict[str, Any], baseline: pd.DataFrame, canonical_records
) -> None:
    runs, records, info = _final(stopped["db"], canonical_records)
    killed = stopped["kill_state"]
    assert runs["id"].tolist() == [killed["runs"][0][0]]  # resumed, not a new run
    assert info["status"] == "complete" and info["message"] is None
    assert len(info["units"]) == N_UNITS
    finished = {u["key"]: u["finished_at"] for u in info["units"]}
    assert all(finished[k] == t for k, t in killed["done"].items())  # not run again
    assert "complete" in stopped["final"].stdout
    pd.testing.assert_frame_equal(records, baseline, check_exact=True)


# reruns ---------------------------------------------------------------------------------------------
def test_rerun_of_a_complete_suite_is_a_new_run_unfinished_ones_resume(
    small_suite, tmp_path: Path, canonical_records
) -> None:
    suite = small_suite(name="rerun", noise_levels=[2], fgsm_eps=[], pgd_eps=[], shard_size=200)
    st = Store(tmp_path / "s.db")
    a = run_suite(suite, st, progress=False)
    assert st.run_info(a)["status"] == "complete"

    # a complete run is never resumed: running the suite again makes a new, identical run
    b = run_suite(suite, st, progress=False)
    assert b != a and st.run_info(b)["status"] == "complete"
    rec_a = canonical_records(st.records(a, expand=False))
    pd.testing.assert_frame_equal(
        canonical_records(st.records(b, expand=False)), rec_a, check_exact=True
    )

    # an unfinished run (as the runner leaves an interrupted one) is resumed by default ...
    st.finish_run(b, "running", "interrupted; rerun the same suite to resume")
    c = run_suite(suite, st, resume=False, progress=False)  # ... unless resume=False (--new)
    assert c not in (a, b)
    assert st.run_info(b)["status"] == "running"
    assert run_suite(suite, st, progress=False) == b
    assert st.run_info(b)["status"] == "complete"

    # another suite (here: another seed) never resumes this suite's runs
    st.finish_run(b, "running")
    other = run_suite(small_suite(name="rerun", noise_levels=[2], fgsm_eps=[], pgd_eps=[],
                                  shard_size=200, seed=1), st, progress=False)  # fmt: skip
    assert other not in (a, b, c)
    assert st.run_info(b)["status"] == "running"
    assert len(st.runs()) == 4
    st.engine.dispose()
