"""The CLI around a run: exit statuses, store-opening errors, credentials never shown, private
files, and the runs table with missing values (in process, with typer's runner)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from typer.testing import CliRunner

from robustlab.cli import EXIT_ERRORS, app
from robustlab.store import Store

SUITE = """
name: half-nan
model: {{name: file, params: {{path: {model}, num_classes: 10}}}}
data: {{name: digits}}
probes:
  - {{kind: perturbation, name: gaussian_noise, levels: [1]}}
"""


class HalfNaN(torch.nn.Module):
    """A real (TorchScript) digits classifier that returns NaN logits for about half the inputs:
    those brighter than the median test image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x.flatten(1))
        bright = x.flatten(1).sum(1) > 19.3125  # the median brightness of digits' test split
        return torch.where(bright[:, None], torch.full_like(z, float("nan")), z)


def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    finally:
        os.chdir(old)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def half_nan_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One CLI run of a suite whose model errors on about half the examples."""
    d = tmp_path_factory.mktemp("halfnan")
    torch.jit.script(HalfNaN()).save(str(d / "halfnan.pt"))
    (d / "suite.yaml").write_text(SUITE.format(model=d / "halfnan.pt"))
    code, stdout, stderr = cli("run", "suite.yaml", "--store", "runs/s.db", "--no-progress", cwd=d)
    return {"dir": d, "code": code, "stdout": stdout, "stderr": stderr}


def test_errored_examples_exit_3_and_say_how_many(half_nan_run: dict[str, object]) -> None:
    d = half_nan_run["dir"]
    assert half_nan_run["code"] == EXIT_ERRORS == 3, half_nan_run["stderr"]
    st = Store(d / "runs" / "s.db")
    rid = st.runs()["id"].iloc[0]
    df = st.records(rid)
    n_err = int(df["error"].notna().sum())
    assert 0.3 * len(df) < n_err < 0.7 * len(df)  # about half
    line = _one_line(half_nan_run["stderr"])
    assert f"{n_err} of {len(df)} example records errored" in line and "exit status 3" in line
    assert "report:" in half_nan_run["stdout"]  # the run is stored and reported all the same
    # the accuracy table shows, per row, how many of its records errored (they count as wrong)
    table = half_nan_run["stdout"].split("report:")[0]
    assert "errored" in table
    per_row = df.groupby(["probe", "level"])["error"].apply(lambda s: int(s.notna().sum()))
    for (probe, level), k in per_row.items():
        row = next(ln for ln in table.splitlines() if f" {probe} " in ln and f" {level:g} " in ln)
        assert row.rstrip(" │").split()[-1] == str(k), row
    st.close()


def test_store_and_report_files_are_private(half_nan_run: dict[str, object]) -> None:
    d = half_nan_run["dir"]
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(d / "runs") == 0o700 and mode(d / "runs" / "s.db") == 0o600
    assert mode(d / "runs" / "reports") == 0o700
    reports = sorted((d / "runs" / "reports").iterdir())
    assert {p.suffix for p in reports} == {".html", ".json"}
    assert all(mode(p) == 0o600 for p in reports)
    st = Store(d / "runs" / "s.db")  # while open, SQLite's -wal and -shm exist: private too
    st.create_run("s", "h" * 64, "{}", 0, 1, {}, {})
    side = [d / "runs" / f"s.db{x}" for x in ("-wal", "-shm")]
    assert all(p.exists() and mode(p) == 0o600 for p in side)
    st.close()


def test_runs_lists_runs_with_and_without_a_message(half_nan_run: dict[str, object]) -> None:
    d = half_nan_run["dir"]
    st = Store(d / "runs" / "s.db")
    rid = st.create_run("other", "o" * 64, "{}", 0, 3, {}, {})
    st.finish_run(rid, "failed", "1 of 3 units failed")
    st.close()
    code, stdout, stderr = cli("runs", "--store", "runs/s.db", cwd=d)
    assert code == 0, stderr
    assert "1 of 3 units failed" in stdout and "half-nan" in stdout and rid in stdout


# store opening errors: one line naming the culprit, exit 2, nothing created ---------------------
def _unwritable(tmp_path: Path) -> Path:
    """A folder where this user cannot create files (root: sysfs, which refuses even root)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500, exist_ok=True)
        return ro
    try:
        (Path("/sys") / "robustlab-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses writes to root")


@pytest.mark.parametrize("command", ["runs", "run"])
def test_store_paths_that_cannot_be_created(tmp_path: Path, command: str) -> None:
    (tmp_path / "afile").write_text("x")
    torch.jit.script(HalfNaN()).save(str(tmp_path / "m.pt"))
    (tmp_path / "suite.yaml").write_text(SUITE.format(model=tmp_path / "m.pt"))
    ro = _unwritable(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (str(tmp_path / "afile" / "s.db"), "is a file, not a folder"),
        (str(tmp_path / "afile" / "sub" / "s.db"), "is a file, not a folder"),
        (str(tmp_path), "is a folder"),
        (str(ro / "s.db"), "not writable"),
    ]
    for loc, message in cases:
        args = ["runs"] if command == "runs" else ["run", "suite.yaml", "--out", str(tmp_path)]
        code, _, stderr = cli(*args, "--store", loc, cwd=tmp_path)
        line = _one_line(stderr)
        assert code == 2 and message in line and Path(loc).name in line, (loc, stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_report_folders_that_cannot_be_created_fail_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    torch.jit.script(HalfNaN()).save(str(tmp_path / "m.pt"))
    (tmp_path / "suite.yaml").write_text(SUITE.format(model=tmp_path / "m.pt"))
    for out, message in [
        (tmp_path / "afile", "is a file, not a folder"),
        (tmp_path / "afile" / "r", "is a file, not a folder"),
        (_unwritable(tmp_path) / "r", "report folder"),
    ]:
        code, _, stderr = cli(
            "run", "suite.yaml", "--store", "s.db", "--out", str(out), cwd=tmp_path
        )
        line = _one_line(stderr)
        assert code == 2 and message in line and str(out) in line, stderr
        assert not (tmp_path / "s.db").exists()  # the store was never opened


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://u:pw@h/x", "unknown database kind 'nosuchdb'"),
        ("postgresql+nosuchdriver://u:pw@h/x", "unknown database driver 'nosuchdriver'"),
        ("sqlite+nosuchdriver://u:pw@/x.db", "unknown database driver 'nosuchdriver'"),
        ("mysql+pymysql://u:pw@127.0.0.1:1/x", "cannot open store"),
        # SQLAlchemy raises a bare ValueError (not ArgumentError) for a port that is not a number
        ("postgresql+psycopg://u:pw@h:notaport/x", "malformed URL"),
        # psycopg's error spans several lines ("connection failed ...\n\tIs the server running")
        ("postgresql+psycopg://u:pw@127.0.0.1:1/x?connect_timeout=2", "cannot open store"),
    ],
)
def test_store_urls_that_cannot_be_opened(tmp_path: Path, url: str, message: str) -> None:
    torch.jit.script(HalfNaN()).save(str(tmp_path / "m.pt"))
    (tmp_path / "suite.yaml").write_text(SUITE.format(model=tmp_path / "m.pt"))
    for args in (["runs"], ["run", "suite.yaml", "--no-progress"]):
        code, stdout, stderr = cli(*args, "--store", url, cwd=tmp_path)
        line = _one_line(stderr)
        assert code == 2 and message in line, stderr
        assert ":pw@" not in stdout + stderr and ":***@" in line  # named, without the password
        # nothing created (not even the default report folder robustlab-runs/reports)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "suite.yaml"]


# credentials ------------------------------------------------------------------------------------
@pytest.mark.postgres
def test_a_password_in_the_store_url_is_never_shown_or_written(pg_url: str, tmp_path: Path) -> None:
    secret = "s3cr3t-pw-42"
    url = sa.make_url(pg_url).set(password=secret).render_as_string(hide_password=False)
    torch.jit.script(HalfNaN()).save(str(tmp_path / "m.pt"))
    (tmp_path / "suite.yaml").write_text(SUITE.format(model=tmp_path / "m.pt"))
    code, stdout, stderr = cli("run", "suite.yaml", "--store", url, "--no-progress", cwd=tmp_path)
    assert code == EXIT_ERRORS, stderr
    code2, stdout2, stderr2 = cli("runs", "--store", url, cwd=tmp_path)
    rid = Store(url).runs()["id"].iloc[0]
    code3, stdout3, stderr3 = cli("show", rid, "--store", url, cwd=tmp_path)
    assert code2 == code3 == 0
    printed = stdout + stderr + stdout2 + stderr2 + stdout3 + stderr3
    assert secret not in printed and ":***@" in printed
    # the default report folder is a plain local path, not one derived from the URL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "robustlab-runs", "suite.yaml"]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(secret.encode() not in p.read_bytes() for p in files)
    st = Store(url)
    assert secret not in st.url and secret in st.connect_url
    with st.engine.connect() as c:  # nothing stored with the run holds it either
        rows = c.execute(sa.text("SELECT * FROM runs")).all()
    assert secret not in repr(rows)
    st.close()


def test_masked_urls() -> None:
    from robustlab.store.location import masked, one_line

    assert masked("postgresql+psycopg://bob:s3cret@db:5432/runs") == (
        "postgresql+psycopg://bob:***@db:5432/runs"
    )
    assert "s3cret" not in masked("postgresql://bob@db/runs?password=s3cret&sslmode=require")
    assert "s3cret" not in masked("weird:://bob:s3cret@db")
    assert masked("/tmp/s.db") == "/tmp/s.db"
    msg = one_line("failed for bob:s3cret\n\tIs the server running?", "postgresql://bob:s3cret@h/x")
    assert msg == "failed for bob:***; Is the server running?"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


class _Broken:
    """A perturbation with a bug: every call raises, so each of its units fails."""

    def __call__(self, x: torch.Tensor, severity: float, rng: object) -> torch.Tensor:
        raise RuntimeError("a bug in this perturbation")


def test_failed_units_exit_3(tmp_path: Path) -> None:
    from robustlab.core.registry import perturbations

    perturbations.register("_test-broken-perturbation")(_Broken)
    try:
        _run_broken(tmp_path)
    finally:  # registries are process-wide: other tests must not see it
        perturbations._items.pop("_test-broken-perturbation", None)


def _run_broken(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(
        "name: broken\nmodel: {name: digits-mlp}\ndata: {name: digits}\nshard_size: 200\n"
        "probes:\n  - {kind: perturbation, name: _test-broken-perturbation, levels: [1]}\n"
    )
    code, stdout, stderr = cli(
        "run", "suite.yaml", "--store", "s.db", "--no-progress", cwd=tmp_path
    )
    assert code == EXIT_ERRORS, stderr
    line = _one_line(stderr)
    assert "2 of 4 units failed" in line and "0 of 360 example records errored" in line
    st = Store(tmp_path / "s.db")
    info = st.run_info(st.resolve("latest"))
    errors = [u["error"] for u in info["units"] if u["status"] == "failed"]
    assert info["status"] == "failed" and len(errors) == 2
    assert all("a bug in this perturbation" in e for e in errors)
    st.close()
