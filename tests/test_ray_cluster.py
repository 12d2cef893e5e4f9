"""A Ray cluster of two nodes on this machine, started with ``ray start`` on loopback addresses
(:class:`robustlab.testing.ray_cluster.LoopbackCluster`, the commands of docs/scale-ray.md), runs a
suite with records identical to the local engine, on both nodes, and each worker process loads
the model and the data once, not once per unit. Every process the nodes started is killed at the
end, also when the test fails. Skips without ``ray``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_small_suite
from robustlab.core.errors import ConfigError
from robustlab.runner import LocalEngine, RayEngine, run_suite
from robustlab.store import Store
from robustlab.testing.ray_cluster import LoopbackCluster

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    """Two nodes (one CPU each) joined as ``robustlab run --ray-address`` joins them."""
    if ray.is_initialized():
        ray.shutdown()
    with LoopbackCluster(nodes=2, cpus=1) as c:
        RayEngine(c.address).start()
        for _ in range(100):  # every node said it started: registered, or a moment after
            if len([n for n in ray.nodes() if n["Alive"]]) == 2:
                break
            time.sleep(0.1)
        assert c.processes()
        yield c
    assert c.processes() == []  # nothing left running


def _run(suite, location: Path, engine) -> pd.DataFrame:
    st = Store(location)
    try:
        rid = run_suite(suite, st, engine=engine, resume=False, progress=False)
        info = st.run_info(rid)
        assert info["status"] == "complete", info["message"]
        return st.records(rid, expand=False)
    finally:
        st.engine.dispose()


def _unused_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_ray_address_is_a_clear_error(tmp_path: Path) -> None:
    # nothing listens on the port: refused at once (not after minutes of Ray's retries) and
    # before a run is stored. Runs before the cluster fixture starts anything (a driver already
    # connected would not connect again).
    if ray.is_initialized():
        ray.shutdown()
    address = _unused_address()
    st = Store(tmp_path / "runs.db")
    try:
        with pytest.raises(ConfigError, match=f"no Ray cluster answers at --ray-address {address}"):
            suite = make_small_suite(noise_levels=(), fgsm_eps=(), pgd_eps=())  # clean only
            run_suite(suite, st, engine=RayEngine(address), progress=False)
        assert st.runs().empty
    finally:
        st.engine.dispose()
    assert not ray.is_initialized()

    # the CLI: one line, exit status 2, no run stored
    from typer.testing import CliRunner

    from robustlab.cli import app

    yaml = tmp_path / "suite.yaml"
    yaml.write_text(
        "name: t\nmodel: {name: digits-mlp}\ndata: {name: digits, params: {split: test}}\n"
    )
    db = tmp_path / "cli.db"
    args = ["run", str(yaml), "--engine", "ray", "--ray-address", address, "--store", str(db)]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert r.exit_code == 2, r.output
    assert f"no Ray cluster answers at --ray-address {address} (Connection refused)" in r.output
    assert "Traceback" not in r.output
    st = Store(db)
    try:
        assert st.runs().empty
    finally:
        st.engine.dispose()


@pytest.mark.slow
def test_two_node_cluster_equals_local_engine(
    cluster: LoopbackCluster, tmp_path: Path, canonical_records
) -> None:
    # 4 shards x (clean + 2 noise levels + fgsm) = 16 units: more units than worker processes
    suite = make_small_suite(name="cluster", shard_size=90, pgd_eps=())
    local = canonical_records(_run(suite, tmp_path / "local.db", LocalEngine()))
    engine = RayEngine(cluster.address)
    remote = canonical_records(_run(suite, tmp_path / "ray.db", engine))
    assert len(local) == 4 * 360
    pd.testing.assert_frame_equal(remote, local, check_exact=True)

    # two nodes, on two loopback addresses, and both ran units
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert sorted(nodes.values()) == cluster.ips() == ["127.0.0.2", "127.0.0.3"]
    assert all(ipaddress.ip_address(a).is_loopback for a in nodes.values())
    places = engine.placements
    assert len(places) == 16
    assert {p.node_id for p in places} == set(nodes), places
    assert {p.node_ip for p in places} == set(cluster.ips())
    assert all(p.pid != os.getpid() for p in places)

    # model and data were loaded once per worker process, not once per unit: every unit a
    # process ran saw one model load and one dataset load in it, and processes ran several units
    pids = {p.pid for p in places}
    assert all(p.loads.get("model") == 1 and p.loads.get("data") == 1 for p in places), places
    assert len(pids) < len(places)
