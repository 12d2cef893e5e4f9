"""The Ray engine reproduces the local engine exactly (records and unit keys), and a local Ray
instance listens on loopback only. Skips without ``ray``; the local engine's determinism is tested
in tests/test_local_engine.py, which always runs (its fixtures are shared from there)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from robustlab.runner import RayEngine
from robustlab.store import Store

ray = pytest.importorskip("ray")

import test_local_engine as local  # noqa: E402 - after the skip

# the local run the Ray run is compared with: the same fixtures (each module runs its own)
_run, suite, workdir, local_records = local._run, local.suite, local.workdir, local.local_records


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local 2-CPU Ray instance for this module, started as the engine starts one (once, shut
    down at the end)."""
    if ray.is_initialized():
        ray.shutdown()
    RayEngine(num_cpus=2).start()
    yield
    ray.shutdown()


def test_ray_engine_equals_local_engine(
    ray_local: None, suite, workdir: Path, local_records: pd.DataFrame, canonical_records
) -> None:
    records, info = _run(suite, workdir / "ray.db", engine=RayEngine(num_cpus=2))
    assert info["status"] == "complete", info["message"]
    assert len(info["units"]) == 15
    assert info["environment"]["engine"] == "ray"
    df = canonical_records(records)
    assert len(df) == len(local_records) == 5 * 360
    # label, pred, correct, error and every extra (PGD distances, queries...) bit for bit, although
    # Ray workers run torch with 1 intra-op thread and this process with several
    pd.testing.assert_frame_equal(df, local_records, check_exact=True)


def test_ray_engine_unit_keys_equal_local(
    ray_local: None, suite, workdir: Path, local_records: pd.DataFrame
) -> None:
    # the same units (content-hash keys) run on either engine, so a run can resume on the other
    local = Store(workdir / "local.db")
    remote = Store(workdir / "ray.db")
    try:
        keys = [st.done_units(st.resolve("latest")) for st in (local, remote)]
    finally:
        local.engine.dispose()
        remote.engine.dispose()
    assert keys[0] == keys[1] and len(keys[0]) == 15


# the local Ray instance listens on loopback only --------------------------------------------------
def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in children.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _listening(pids: list[int]) -> list[tuple[str, str]]:
    """(process name, local address) of every TCP socket in LISTEN state held by ``pids``."""
    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # state LISTEN
                    raw = bytes.fromhex(f[1].split(":")[0])
                    if len(raw) == 4:
                        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
                    else:  # four little-endian 32-bit words
                        words = struct.unpack("<4I", raw)
                        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
                    name = Path(f"/proc/{inodes[f[9]]}/comm").read_text().strip()
                    out.append((name, ip))
    return out


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux /proc")
def test_local_ray_instance_listens_on_loopback_only(ray_local: None) -> None:
    @ray.remote
    def one() -> int:
        return 1

    assert ray.get([one.remote() for _ in range(2)]) == [1, 1]  # workers are up
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    sockets = _listening([os.getpid(), *_descendants(os.getpid())])
    names = {name for name, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # Ray's servers were found
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert all(ip in loopback for _, ip in sockets), sockets
