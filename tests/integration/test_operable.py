"""Operable processes, with real ones: every chain daemon serves the standard gRPC health
service and Prometheus metrics on its own port; SIGTERM stops a daemon or a miner cleanly (exit
code 0, the block store closed with its WAL checkpointed) and a restarted daemon resumes at the
height it stopped at.

Every process is started by the cluster harness (or, for the miner with a metrics port, here)
and killed by PID when its test ends, pass or fail. Waiting is on ready lines, streams and
process exits under deadlines, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.store import BlockStore
from dualchain.deploy.processes import free_ports, read_json_line
from dualchain.proto.v1 import chain_pb2
from tests.integration.cluster import Cluster, kill_tree
from tests.integration.cmbc_cluster import CmbcCluster, hash_rate

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CHAIN_SERVICES = ["", "dualchain.v1.ChainService", "dualchain.v1.PeerService"]
MINER_SERVICE = "dualchain.v1.MinerService"
# A daemon gives calls in flight 1 s (daemon.main.GRACE_S), then closes its store: well inside.
SIGTERM_EXIT_BOUND_S = 10.0


async def health_of(cluster: Cluster, i: int, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(cluster.channel(i))
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


async def scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    return await asyncio.to_thread(get)


def set_metrics_port(config: Path, port: int) -> None:
    data = json.loads(config.read_text())
    data["metrics_port"] = port
    config.write_text(json.dumps(data, indent=2) + "\n")


def store_after_exit(cluster: Cluster, i: int) -> int:
    """Checks node ``i``'s block store as a clean shutdown leaves it; returns its height."""
    db = cluster.directory / "data" / f"node-{i}" / "chain.sqlite"
    # Closing the last connection checkpoints the WAL into the database and deletes it: a
    # leftover WAL means the store was not closed (killed, or a connection leaked).
    assert not db.with_name("chain.sqlite-wal").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with BlockStore(db) as store:
        return store.height()


async def test_a_ctbc_daemon_serves_health_and_metrics_once_ready(make_cluster) -> None:
    cluster: Cluster = make_cluster(nodes=1, start=False)
    (port,) = free_ports(1)
    set_metrics_port(cluster.configs[0], port)
    ready = await cluster.astart(0)
    assert ready["metrics_port"] == port

    assert [await health_of(cluster, 0, s) for s in CHAIN_SERVICES] == [SERVING] * 3
    with pytest.raises(grpc.aio.AioRpcError) as info:  # a CTBC daemon serves no miners
        await health_of(cluster, 0, MINER_SERVICE)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    await cluster.wait_height(0, 1, timeout=20)
    text = await scrape(port)
    assert 'dualchain_chain_height{kind="ctbc"}' in text
    assert "dualchain_process_cpu_seconds" in text


async def test_sigterm_stops_a_ctbc_daemon_cleanly_and_a_restart_resumes_at_its_height(
        make_cluster) -> None:
    cluster: Cluster = make_cluster(nodes=1)
    await cluster.wait_height(0, 3, timeout=20)
    health = health_pb2_grpc.HealthStub(cluster.channel(0))
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert (await watch.read()).status == SERVING
    blocks = cluster.chain(0).SubscribeBlocks(
        chain_pb2.SubscribeBlocksRequest(from_height=1), timeout=30)
    first = await blocks.read()  # the stream is open on the server before the signal

    async def drain(stream) -> list:
        """Every message of a stream until the server ends it (as it does on shutdown)."""
        seen = []
        try:
            while (message := await stream.read()) is not grpc.aio.EOF:
                seen.append(message)
        except grpc.aio.AioRpcError:
            pass
        return seen

    # Both streams are in flight when the signal arrives.
    watched = asyncio.create_task(drain(watch))
    announced = asyncio.create_task(drain(blocks))
    started = time.monotonic()
    assert await cluster.astop(0, timeout=SIGTERM_EXIT_BOUND_S) == 0
    print(f"SIGTERM to exit: {time.monotonic() - started:.2f} s")
    statuses = [m.status for m in await asyncio.wait_for(watched, 10)]
    heights = [m.header.height for m in [first, *await asyncio.wait_for(announced, 10)]]

    assert NOT_SERVING in statuses  # health turned before the server went away
    stored = store_after_exit(cluster, 0)
    assert heights and max(heights) <= stored  # everything announced is stored

    ready = await cluster.astart(0)
    assert ready["height"] == stored
    await cluster.wait_height(0, stored + 1, timeout=20)  # and it goes on committing


async def test_a_cmbc_daemon_and_its_miner_are_operable(make_cmbc_cluster) -> None:
    """A CMBC daemon's health also covers the miner service. A miner (no gRPC server, so no
    health service) serves its metrics and stops on SIGTERM with its workers, exit code 0; the
    daemon then stops cleanly too and restarts at the height it stopped at."""
    duty = 0.3
    pow_params = PowParams(initial_difficulty=max(1, int(hash_rate() * duty * 0.3)),
                           block_interval_ms=500, retarget_interval=1000, finality_depth=3)
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=1, miners=1, pow=pow_params)
    assert [await health_of(cluster, 0, s) for s in [*CHAIN_SERVICES, MINER_SERVICE]] == \
        [SERVING] * 4

    (port,) = free_ports(1)
    code = ("import sys; from pathlib import Path; from dualchain.chain.miner import "
            "MinerConfig, run; sys.exit(run(MinerConfig(cmbc=sys.argv[1], key=Path(sys.argv[2]),"
            " workers=2, duty=float(sys.argv[3]), metrics_port=int(sys.argv[4]))))")
    with cluster.miner_log_path(0).open("ab") as log:
        miner = subprocess.Popen(
            [sys.executable, "-c", code, cluster.addresses[0], str(cluster.miner_key(0)),
             str(duty), str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, bufsize=0)
    try:
        ready = await asyncio.to_thread(read_json_line, miner, "ready", 60)
        assert ready["metrics_port"] == port
        await cluster.wait_height(0, 3, timeout=25)
        text = await scrape(port)
        assert "dualchain_miner_templates_total" in text
        assert "dualchain_miner_hashrate_hs" in text

        workers = psutil.Process(miner.pid).children(recursive=True)
        assert len(workers) >= 2
        os.kill(miner.pid, signal.SIGTERM)
        assert await asyncio.to_thread(miner.wait, SIGTERM_EXIT_BOUND_S) == 0
        stopped = await asyncio.to_thread(read_json_line, miner, "stopped", 5)
        assert stopped["templates"] >= 1
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"hashing workers outlived the miner: {alive}"
    finally:
        kill_tree(miner)

    assert await cluster.astop(0, timeout=SIGTERM_EXIT_BOUND_S) == 0
    stored = store_after_exit(cluster, 0)
    assert stored >= 3
    assert (await cluster.astart(0))["height"] == stored


async def test_a_daemon_keeps_its_health_file_while_it_serves(make_cluster, monkeypatch,
                                                              tmp_path: Path) -> None:
    """The container health check's protocol with a real daemon: the file appears once it
    serves, is touched again by its event loop, and is gone as soon as SIGTERM stops it."""
    health = tmp_path / "health"
    healthy = Path(__file__).resolve().parents[2] / "deploy" / "healthy"
    env = {**os.environ, "DUALCHAIN_HEALTH_FILE": str(health)}

    def check() -> int:
        return subprocess.run([str(healthy)], env=env, capture_output=True,
                              timeout=10).returncode

    monkeypatch.setenv("DUALCHAIN_HEALTH_FILE", str(health))  # inherited by the daemon
    cluster: Cluster = make_cluster(nodes=1, start=False)
    assert check() == 1  # not started: absent
    await cluster.astart(0)

    async def until(condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # a file has no event to await: bounded polling
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    await until(health.exists, 10)  # ready line first, then the heartbeat starts
    assert check() == 0
    old = time.time() - 120
    os.utime(health, (old, old))
    assert check() == 1  # stale: what a stuck event loop would leave
    await until(lambda: health.stat().st_mtime > old + 60, 10)  # touched again (every 2 s)
    assert check() == 0
    assert await cluster.astop(0, timeout=SIGTERM_EXIT_BOUND_S) == 0
    assert not health.exists() and check() == 1
