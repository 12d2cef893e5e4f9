"""The code sandbox survives hostile programs: each ends as a failed sample, the machine unharmed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from robustlab.code.problems import check_program, load_humaneval
from robustlab.code.sandbox import UID_BASE, Checked, Limits, Sandbox, isolation, run_program
from robustlab.core.errors import ConfigError

FAST = Limits(timeout=2.0, memory_mb=512)


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    with Sandbox(2) as s:
        yield s


@pytest.mark.parametrize(
    ("src", "status"),
    [
        ("assert 1 + 1 == 2", "passed"),
        ("assert 1 + 1 == 3", "failed"),
        ("while True: pass", "timeout"),
        ("import os\nwhile True:\n    os.fork()", "failed|timeout"),  # fork bomb
        ("x = ' ' * (10 ** 11)", "failed"),  # memory
        ("import ctypes\nctypes.string_at(0)", "failed"),  # segfault
        # output floods go to /dev/null (no host file grows) and cannot hide the failure after them
        ("print('x' * 10 ** 7)\nimport sys\nsys.stderr.write('y' * 10 ** 8)\nassert 0", "failed"),
        ("import sys\nsys.exit(0)", "failed"),  # leaving before the tests ran
        ("import os\nos._exit(0)", "failed"),
        ("raise SystemExit", "failed"),
    ],
)
def test_hostile_programs_fail_cleanly(sb: Sandbox, src: str, status: str) -> None:
    res = sb.run_one(src, FAST)
    assert res.status in status.split("|"), (res, src)


def test_no_network(sb: Sandbox) -> None:
    src = "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))"
    res = sb.run_one(src, FAST)
    assert res.status == "failed" and "OSError" in res.message or "unreachable" in res.message


def test_rm_rf_home_leaves_outside_files(sb: Sandbox, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    src = (
        "import os, shutil\n"
        "os.system('rm -rf ~ 2>/dev/null')\n"
        f"shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)\n"
        f"os.system('rm -rf {tmp_path} 2>/dev/null')\n"
        "assert os.environ['HOME'].startswith(os.environ['TMPDIR'])\n"
    )
    sb.run_one(src, FAST)
    if os.geteuid() == 0:  # dropped to an unprivileged uid: even explicit deletion fails
        assert sentinel.read_text() == "keep"
    assert Path.home().exists()


def test_environment_is_scrubbed(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLAB_TEST_SECRET", "hunter2")
    src = "import os\nassert 'ROBUSTLAB_TEST_SECRET' not in os.environ\nassert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}"
    assert sb.run_one(src, FAST).passed


@pytest.mark.skipif(os.geteuid() != 0, reason="per-slot uids need root")
def test_leftover_processes_are_killed(sb: Sandbox) -> None:
    src = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
    )
    assert sb.run_one(src, FAST).passed
    uids = set(sb._uids)
    assert len(uids) == 4 and all(UID_BASE <= u < UID_BASE + 1000 for u in uids)
    time.sleep(0.2)
    left = [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) in uids and _alive(p)]
    assert not left, left  # zombies awaiting their reaper are dead already


@pytest.mark.skipif(os.geteuid() != 0, reason="per-slot uids need root")
def test_concurrent_sandboxes_get_distinct_uids(sb: Sandbox) -> None:
    with Sandbox(2) as other:
        assert not set(other._uids) & set(sb._uids)
        res = other.run(["import time\ntime.sleep(0.5)"] * 2 + ["x = 1"] * 2)
        assert all(r.passed for r in res)


def _alive(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def test_canonical_solutions_pass_and_empty_fail(sb: Sandbox) -> None:
    probs = load_humaneval(limit=8)
    res = sb.run([check_program(p, p["canonical_solution"]) for p in probs])
    assert all(r.passed for r in res)
    res = sb.run([check_program(p, "    pass\n") for p in probs])
    assert not any(r.passed for r in res)


def test_isolation_reported_and_bad_limits() -> None:
    assert set(isolation()) == {
        "network_namespace",
        "pid_namespace",
        "mount_namespace",
        "own_uid",
        "separate_checker",
    }
    with pytest.raises(ConfigError, match="positive"):
        Limits(timeout=0)
    with pytest.raises(ConfigError, match="workers"):
        Sandbox(0)
    assert run_program("x = 1").passed


def test_checker_gets_the_prompt_helpers_even_when_the_prompt_does_not_parse(sb: Sandbox) -> None:
    """A docstring turned into comments leaves ``f`` without a body; ``poly`` and ``A`` still count."""
    prompt = (
        "import math\nif False:\n    A = 3\nelse:\n    A = 2\n\n\n"
        "def poly(x):\n    return A * x\n\n\ndef f(x):\n    # return poly(x)\n"
    )
    tests = "def check(candidate):\n    assert candidate(3) == poly(3) == 6\n"
    job = Checked(prompt + "    return poly(x)\n", tests, "f", "check(f)", context=prompt)
    assert sb.run_one(job, FAST).passed
    wrong = Checked(prompt + "    return 0\n", tests, "f", "check(f)", context=prompt)
    assert sb.run_one(wrong, FAST).status == "failed"
