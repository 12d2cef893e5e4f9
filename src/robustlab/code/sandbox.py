"""Sandboxed execution of untrusted generated code (ReCode / HumanEval style, S2).

Every program runs in its own fresh process, forked from a pre-started worker:

* new PID and network namespaces (``unshare --net --pid --fork --kill-child``, adding ``--user
  --map-root-user`` when not root): no network, and when the program's first process ends (or is
  killed) the kernel kills every process it left behind, including daemonized fork-bomb children;
* when the caller is root, the program drops to uid/gid ``nobody`` so it cannot touch files it does
  not own, and ``RLIMIT_NPROC`` caps its processes (root ignores that limit); the standard-library
  modules the program names in ``import`` statements are imported before the drop, because the
  interpreter may live where ``nobody`` cannot read (e.g. under ``/root``) -- modules imported
  dynamically (``__import__(name)``) then fail unless ``nobody`` can read the standard library;
* rlimits: CPU seconds, address space, file size, core dumps off; a wall-clock timeout in the
  parent (SIGKILL of the whole process group on expiry);
* a private temporary working directory that is also ``HOME`` and ``TMPDIR``, removed afterwards;
  a scrubbed environment (only PATH, HOME, TMPDIR, LANG), ``python -I -S``;
* success is reported through a private pipe only after the program ran to the end (exiting
  early, ``sys.exit`` or ``os._exit`` count as failures); stdout is discarded, the tail of stderr
  becomes the failure message.

Where ``unshare`` is unavailable (no user namespaces) the program still runs in its own session
and process group with the same rlimits, but without network isolation (``isolation()`` says so).

Example::

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
    Each worker is a zygote process in its own PID and network namespaces that forks one fresh
    child per program (see ``_zygote.py``); as root, each worker slot holds a uid of its own in
    [61000, 62000) -- claimed with a lock file, so sandboxes in other processes (Ray workers,
    parallel tests) never share it -- and the cleanup ``kill(-1)`` as that uid reaches every
    leftover process of that slot and of no one else.
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
