"""Sandboxed execution of untrusted generated code (ReCode / HumanEval style, S2).

A job is a :class:`Checked` (an untrusted program judged by trusted tests) or a plain string (a
whole program that passes when it runs to its end, i.e. judges itself). Each job runs in fresh
processes forked from a pre-started worker (``_zygote.py``) in new network and PID namespaces:

* the **candidate** (the program) is pid 1 of a PID namespace of its own (it sees only its own
  processes; everything it leaves behind dies with it), in a minimal read-only root (read-only
  binds of ``/usr`` and the Python install, fake ``/etc``) with a private ``/proc`` and ``/tmp``;
  rlimits, every descriptor but its socket closed, then -- before anything of the job is
  compiled -- uid dropped (root: a uid of its own per slot, ``RLIMIT_NPROC``) or all capabilities
  (user namespace), ``no_new_privs``;
* the **checker** (the tests) runs as another uid, non-dumpable, and calls the program's entry
  point through a proxy that exchanges plain data (no pickle, no marshal); it alone writes the
  verdict, so nothing the program does in its own process (descriptor scans, ``/proc/self/mem``,
  ``gc``, frames, ``os._exit(0)``, patched builtins, objects equal to everything) can pass a wrong
  program;
* the worker enforces the wall-clock timeout and kills the candidate's PID namespace.

Without root the uids are not separate; without user namespaces or mount namespaces the layers
that cannot be had are missing, and :func:`isolation` (asking a real worker) says exactly which
are in force. The threat model is in docs/code-generation.md.

Example::

    job = check_program(problem, completion)   # robustlab.code.problems: a Checked job
    Sandbox(2).run_one(job).status             # 'passed' only if the checker's tests passed
    res = run_program("assert 1 + 1 == 2")
    res.passed, res.status          # True, 'passed'
    run_programs(["while True: pass"] * 4, Limits(timeout=1.0))   # 4 x 'timeout', in parallel
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import queue
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from robustlab.code._sandbox_os import (
    Checked,
    ExecResult,
    Limits,
    _one_line,
    _start_zygote,
    _stop,
    isolation,
)
from robustlab.core.errors import ConfigError

UID_BASE = 61000  # as root, each worker slot runs programs as its own uid in [61000, 62000)
UID_COUNT = 1000


class Sandbox:
    """A bounded pool of pre-forked sandbox workers; use as a context manager.

    ``Sandbox(workers=2).run(sources, limits)`` -> one :class:`ExecResult` per source, in order.
    Each worker is a zygote process in its own network and PID namespaces that forks a fresh
    candidate and checker per job (see ``_zygote.py``); as root, each worker slot holds two uids
    of its own in [61000, 62000) (the candidate's and the checker's) -- claimed with lock files, so
    sandboxes in other processes (Ray workers, parallel tests) never share them.
    """

    def __init__(self, workers: int | None = None) -> None:
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ConfigError(f"sandbox workers must be >= 1, got {n}")
        self.workers = n
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._procs: dict[int, subprocess.Popen[str]] = {}
        self._uids: list[int] = []
        self._lock_fds: list[int] = []
        if os.geteuid() == 0:
            self._claim_uids(2 * n)  # per slot: the program's uid and the checker's
        for i in range(n):
            self._free.put(i)

    def _claim_uids(self, n: int) -> None:
        # one machine-wide, root-only place (not $ROBUSTLAB_CACHE, which differs between runs)
        base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
        locks = Path(base) / "robustlab-sandbox-uids"
        locks.mkdir(mode=0o700, exist_ok=True)
        if locks.is_symlink() or locks.stat().st_uid != 0:
            raise ConfigError(f"{locks} must be a directory owned by root")
        os.chmod(locks, 0o700)  # sandboxed uids cannot touch the locks
        for uid in range(UID_BASE, UID_BASE + UID_COUNT):
            fd = os.open(locks / str(uid), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._uids.append(uid)
            self._lock_fds.append(fd)
            if len(self._uids) == n:  # n = 2 x workers
                return
        self.close()
        raise ConfigError(f"no free sandbox uid in [{UID_BASE}, {UID_BASE + UID_COUNT})")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in self._procs.values():
            _stop(proc)
        self._procs.clear()
        for fd in self._lock_fds:
            os.close(fd)  # releases the uid
        self._lock_fds, self._uids = [], []

    def _zygote(self, slot: int) -> subprocess.Popen[str]:
        proc = self._procs.get(slot)
        if proc is None or proc.poll() is not None:
            proc = _start_zygote()
            self._procs[slot] = proc
        return proc

    def run_one(self, job: str | Checked, limits: Limits | None = None) -> ExecResult:
        """Run one program in fresh sandboxed processes; never raises for bad programs.

        A :class:`Checked` job is judged by its trusted tests in a separate checker process; a
        plain string is a whole program that passes when it runs to its end (it judges itself).
        """
        lim = limits or Limits()
        chk = job if isinstance(job, Checked) else Checked(program=job)
        slot = self._free.get()
        t0 = time.perf_counter()
        try:
            uid, checker_uid = self._uids[2 * slot : 2 * slot + 2] if self._uids else (-1, -1)
            req = {
                **dataclasses.asdict(chk),
                "timeout": lim.timeout,
                "mem": lim.memory_mb << 20,
                "cpu": lim.cpu_s if lim.cpu_s is not None else int(lim.timeout) + 2,
                "fsize": lim.fsize_mb << 20,
                "nproc": lim.max_procs,
                "uid": uid,
                "checker_uid": checker_uid,
            }
            proc = self._zygote(slot)
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps(req) + "\n")
                proc.stdin.flush()
                res = json.loads(proc.stdout.readline())
            except (OSError, ValueError):
                _stop(proc)
                return ExecResult("failed", "sandbox worker died", time.perf_counter() - t0)
            wall = time.perf_counter() - t0
            if not res["done"]:
                return ExecResult("timeout", f"timed out after {lim.timeout:g} s", wall)
            if res["passed"]:
                return ExecResult("passed", "", wall)
            return ExecResult("failed", _one_line(res["message"]), wall)
        finally:
            self._free.put(slot)

    def run(
        self, sources: Sequence[str | Checked], limits: Limits | None = None
    ) -> list[ExecResult]:
        """Run many programs, at most ``workers`` at a time; results in input order."""
        if not sources:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(sources))) as pool:
            return list(pool.map(lambda s: self.run_one(s, limits), sources))


def run_program(source: str | Checked, limits: Limits | None = None) -> ExecResult:
    """Run one program in a one-off sandbox (see :class:`Sandbox` for many)."""
    with Sandbox(1) as sb:
        return sb.run_one(source, limits)


def run_programs(
    sources: Sequence[str | Checked], limits: Limits | None = None, workers: int | None = None
) -> list[ExecResult]:
    """Run many programs with a bounded pool of sandbox workers (default: one per CPU)."""
    with Sandbox(workers) as sb:
        return sb.run(sources, limits)


__all__ = ["Checked", "ExecResult", "Limits", "Sandbox", "isolation", "run_program", "run_programs"]
