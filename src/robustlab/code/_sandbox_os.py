"""Sandbox building blocks: limits, results, namespace probing, failure messages, worker stop."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass

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


def isolation() -> dict[str, bool]:
    """Which isolation layers are active on this machine."""
    ns = bool(_unshare_prefix())
    return {"network_namespace": ns, "pid_namespace": ns, "drop_to_nobody": os.geteuid() == 0}


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


def _failure(code: int, err_path: str) -> str:
    """One line describing why a program failed: the last stderr line, or the signal/exit code."""
    try:
        with open(err_path, "rb") as f:
            f.seek(max(0, os.path.getsize(err_path) - 2000))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        lines = []
    last = lines[-1][:300] if lines else ""
    if code < 0 or code > 128:
        sig = -code if code < 0 else code - 128
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return f"killed by {name}" + (f": {last}" if last else "")
    return last or f"exited with status {code} before finishing"
