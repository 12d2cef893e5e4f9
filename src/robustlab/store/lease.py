"""Who runs a run: an owner (host, pid) and a heartbeat, so a killed run shows as interrupted.

A run in progress holds a *lease*: its row names the owner's host and process id and the time of
its last heartbeat. The runner's writer thread renews it every ``HEARTBEAT`` seconds and with every
group of units it writes (:mod:`robustlab.runner.writer`). A run whose stored status is
``running`` counts as **interrupted** when

- its owner ran on this host and that process is gone (seen at once after a SIGKILL), or
- its heartbeat is older than ``LEASE`` seconds (any host: a killed machine, a lost connection),
  or it has no heartbeat at all (a run stored before schema 3).

Interrupted runs resume like any unfinished run; a run whose lease is live and owned by another
process is never resumed by a second process (that would compute its units twice).

Example::

    state("running", Owner.here().host, 999999, time.time())   # -> "interrupted" (no such pid)
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

HEARTBEAT = 10.0  # seconds between renewals while a run executes
LEASE = 60.0  # a heartbeat older than this means the owner is gone


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int

    @staticmethod
    def here() -> Owner:
        return Owner(socket.gethostname()[:200], os.getpid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists, owned by someone else (or cannot tell)
        return True
    return True


def live(host: str | None, pid: int | None, heartbeat_at: float | None, now: float) -> bool:
    """Whether a ``running`` run's owner may still be working on it."""
    if heartbeat_at is None or now - heartbeat_at > LEASE:
        return False
    here = Owner.here()
    if host == here.host and pid is not None:
        return pid == here.pid or _pid_alive(int(pid))
    return True


def state(
    status: str,
    host: str | None,
    pid: int | None,
    heartbeat_at: float | None,
    now: float | None = None,
) -> str:
    """The status to show: the stored one, or ``interrupted`` for a running run nobody runs."""
    if status != "running":
        return status
    return (
        "running"
        if live(host, pid, heartbeat_at, time.time() if now is None else now)
        else "interrupted"
    )
