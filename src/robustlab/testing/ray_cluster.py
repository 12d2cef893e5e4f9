"""A Ray cluster of several nodes on this machine, started with ``ray start`` on loopback addresses:
to test and measure a suite on a multi-node cluster without a second machine.

Node ``i`` (``i = 0`` the head) runs on its own loopback address ``127.0.0.{i + 2}`` with ``cpus``
CPUs. Ray 2.60's ``ray start`` replaces 127.0.0.1 by the machine's external address for every
node but a single-machine head, so each node takes another address of 127.0.0.0/8; the nodes'
addresses are loopback ones, but Ray's servers then listen on every interface (only a node on
exactly 127.0.0.1 listens on loopback only). Token authentication is therefore on (a random token,
in the environment of the started processes and, while the cluster runs, of this process), and
there is no dashboard. Every process a node started is killed on exit, by session (each
``ray start`` is a session leader): never ``ray stop``, which stops every Ray instance of the user
on the machine. Needs ``ray`` (``pip install 'robustlab[ray]'``) and Linux ``/proc``.

Example::

    from robustlab.runner import RayEngine, run_suite
    from robustlab.testing.ray_cluster import LoopbackCluster

    with LoopbackCluster(nodes=2) as cluster:
        run_id = run_suite(suite, store, engine=RayEngine(cluster.address))
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from robustlab.core.errors import ConfigError

_STARTED = "Ray runtime started."


class LoopbackCluster:
    """``nodes`` Ray nodes on 127.0.0.2, 127.0.0.3, ... with ``cpus`` CPUs each (a context
    manager; :attr:`address` is the head's ``host:port``, for ``RayEngine`` / ``--ray-address``)."""

    def __init__(
        self, nodes: int = 2, cpus: int = 1, object_store_mb: int = 100, timeout: float = 120.0
    ) -> None:
        self.nodes = nodes
        self.cpus = cpus
        self.object_store_mb = object_store_mb
        self.timeout = timeout
        self.address = ""
        self._procs: list[subprocess.Popen] = []
        self.sessions: set[int] = set()  # one per ``ray start`` (its pid): all it started
        self._tmp: Path | None = None
        self._env_before: dict[str, str | None] = {}

    def processes(self) -> list[int]:
        """Pids of the live processes the nodes started (empty once stopped)."""
        return _session_members(self.sessions)

    def ips(self) -> list[str]:
        return [f"127.0.0.{i + 2}" for i in range(self.nodes)]

    def commands(self, port: int) -> list[list[str]]:
        """The ``ray start`` command of each node, head first."""
        head, *workers = self.ips()
        flags = [
            "--num-cpus", str(self.cpus), "--disable-usage-stats", "--block",
            "--include-log-monitor", "false",
            "--object-store-memory", str(self.object_store_mb * 2**20),
        ]  # fmt: skip
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        cmds = [[ray, "start", "--head", "--node-ip-address", head, "--port", str(port),
                 "--include-dashboard", "false", *flags]]  # fmt: skip
        for ip in workers:
            cmds.append([ray, "start", "--address", f"{head}:{port}", "--node-ip-address", ip,
                         *flags])  # fmt: skip
        return cmds

    def __enter__(self) -> LoopbackCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the head, then the other nodes; return once every node runs."""
        if self.nodes < 1 or self.cpus < 1:
            raise ConfigError(f"a cluster needs nodes >= 1 and cpus >= 1, got {self}")
        head = self.ips()[0]
        with socket.socket() as s:
            s.bind((head, 0))
            port = s.getsockname()[1]
        self.address = f"{head}:{port}"
        self._tmp = Path(tempfile.mkdtemp(prefix="rl-ray-"))  # Ray's socket paths stay short
        token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        env = {**os.environ, **token}
        cmds = self.commands(port)
        cmds[0] += ["--temp-dir", str(self._tmp)]
        deadline = time.monotonic() + self.timeout
        self._spawn(cmds[0], env)
        self._wait(lambda: _listens(head, port), deadline)  # the other nodes join its GCS
        for cmd in cmds[1:]:
            self._spawn(cmd, env)
        self._wait(lambda: all(_STARTED in log for log in self._logs()), deadline)
        self._env_before = {k: os.environ.get(k) for k in token}
        os.environ.update(token)  # this process is the driver
        _reload_ray_auth()

    def stop(self) -> None:
        """Disconnect this process and kill every process the nodes started (idempotent)."""
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
        if self._env_before:
            for k, v in self._env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self._env_before = {}
            _reload_ray_auth()
        for _ in range(3):  # a process forked while we kill is caught on the next pass
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for p in self._procs:
            p.wait(30)
        self._procs = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __repr__(self) -> str:
        return f"LoopbackCluster(nodes={self.nodes}, cpus={self.cpus}, address={self.address!r})"

    # internals ------------------------------------------------------------------------------
    def _spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        assert self._tmp is not None
        with open(self._tmp / f"node{len(self._procs)}.log", "w") as log:
            self._procs.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            )  # fmt: skip
        self.sessions.add(self._procs[-1].pid)

    def _logs(self) -> list[str]:
        assert self._tmp is not None
        return [(self._tmp / f"node{i}.log").read_text() for i in range(len(self._procs))]

    def _wait(self, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            dead = [i for i, p in enumerate(self._procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"node {dead[0]} exited" if dead else f"not up after {self.timeout:g} s"
                tails = "\n".join(f"--- node {i}\n{t[-1500:]}" for i, t in enumerate(self._logs()))
                raise RuntimeError(f"the Ray cluster did not start: {why}\n{tails}")
            time.sleep(0.2)


def _listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _session_members(sids: set[int]) -> list[int]:
    """Pids of the live processes in sessions ``sids`` (``/proc/<pid>/stat``: state and session
    id; a killed process whose parent died stays a zombie until init reaps it)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] not in "ZX" and int(fields[3]) in sids:
                    out.append(int(d))
    return out


def _reload_ray_auth() -> None:
    """Make this process read ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN`` again: Ray caches both when
    first used (a process started with them set, as ``robustlab run`` is, needs nothing)."""
    if "ray" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
