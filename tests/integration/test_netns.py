"""A testbed across Linux network namespaces (``dualchain up --hosts netns``): 2 server-node
hosts and a clients host per node, 50 ms of added delay on what node-1's host sends. Model
versions commit, every CTBC replica holds the same chain, the processes talk over their
namespaces' addresses only, and nothing of the run's network is left afterwards, pass or fail.

Needs root and iproute2 (skipped otherwise). Link specs go through ``tc netem`` where the kernel
has it and through the userspace link otherwise; the first test checks both kinds of link.
"""

from __future__ import annotations

import atexit
import socket
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from dualchain.deploy import netns
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import chain_stub
from tests.integration.testbeds import running_testbed

REASON = netns.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no network namespaces: {REASON}")
DELAY_S = 0.05


def _connect_s(address: str, port: int) -> float:
    """One TCP handshake's time from here (the root namespace): one round trip."""
    began = time.perf_counter()
    with socket.create_connection((address, port), timeout=5):
        return time.perf_counter() - began


def _listen(network: netns.Network, host: str, port: int):
    """A process listening on ``port`` of ``host``'s address (a stand-in for a daemon)."""
    import subprocess
    import sys

    code = (f"import socket,time; s=socket.create_server(({network.address(host)!r}, {port}));"
            "print('ok', flush=True); time.sleep(60)")
    proc = subprocess.Popen([*network.exec_prefix(host), sys.executable, "-c", code],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
    return proc


@pytest.mark.parametrize("backend", ["userspace", "tc"])
def test_a_link_spec_delays_what_its_host_sends(backend: str) -> None:
    prefix = netns.run_prefix(f"test-links-{backend}")
    network = netns.prepare(prefix, ["fast", "slow"], {"slow": "delay=50ms"}, backend)
    try:
        try:
            network.create()
        except netns.NetnsError as exc:
            if backend == "tc" and "netem" in str(exc):
                pytest.skip(f"this kernel has no sch_netem: {exc}")
            raise
        servers = [_listen(network, host, 7000) for host in ("fast", "slow")]
        fast = min(_connect_s(network.address("fast"), 7000) for _ in range(3))
        slow = min(_connect_s(network.address("slow"), 7000) for _ in range(3))
        assert fast < DELAY_S / 2 and DELAY_S <= slow < DELAY_S * 3, (fast, slow)
        assert network.links["slow"] == ("userspace" if backend == "userspace" else "veth+netem")
    finally:
        network.teardown()
    assert all(s.wait(5) is not None for s in servers)  # killed with their namespaces
    assert netns.leftovers(prefix) == []


def test_a_leftover_of_a_crashed_run_is_removed_when_its_prefix_starts_again() -> None:
    prefix = netns.run_prefix("test-leftover")
    crashed = netns.prepare(prefix, ["a"])
    crashed.create()
    atexit.unregister(crashed.teardown)  # as if its launcher had been killed
    assert netns.leftovers(prefix)
    network = netns.prepare(prefix, ["a", "b"])
    try:
        assert netns.leftovers(prefix) == []
        network.create()
        assert sorted(netns.leftovers(prefix)) == sorted(
            [prefix, f"{prefix}-a", f"{prefix}-b", f"{prefix}-switch"])
    finally:
        network.teardown()
    assert netns.leftovers(prefix) == []


@pytest.fixture
def testbed(tmp_path: Path) -> Iterator[Testbed]:
    workdir = tmp_path / "netns"
    prefix = netns.run_prefix(str(workdir.resolve()))
    with running_testbed(workdir, nodes=2, clients=2, miners=1, batches=5, window_s=1.0,
                         hosts="netns",
                         netem={"node-1": f"delay={int(DELAY_S * 1000)}ms"}) as tb:
        yield tb
    assert netns.leftovers(prefix) == [], "the run's namespaces outlived it"


@pytest.mark.timeout(150)
def test_a_testbed_across_namespaces_commits_and_agrees(testbed: Testbed) -> None:
    network = testbed.network
    assert [h.name for h in network.plan.hosts] == ["node-0", "node-1", "clients-0",
                                                    "clients-1"]
    subnet = network.plan.subnet
    testbed.wait_for(lambda proc, event: event["event"] == "version" and event["version"] >= 3,
                     90)

    # Every replica holds the same CTBC chain up to the lowest height among them.
    stubs = [chain_stub(testbed, f"ctbc-{i}") for i in range(2)]
    height = min(s.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height for s in stubs)
    assert height >= 3
    for h in (1, height):
        hashes = {s.GetBlock(chain_pb2.GetBlockRequest(height=h), timeout=10)
                  .block.header.SerializeToString() for s in stubs}
        assert len(hashes) == 1, f"replicas differ at height {h}"

    # Processes listen, dial and are connected on namespace addresses only.
    assert all(ip_address(p.address.split(":")[0]) in subnet for p in testbed.procs)
    for name in ("ctbc-1", "client-0"):
        pid = testbed.proc(name).popen.pid
        connections = netns.tcp_connections(pid)
        assert connections, f"{name}: no established connection"
        assert all(ip_address(a) in subnet and ip_address(b) in subnet
                   for a, _, b, _ in connections), (name, connections)
    node0 = network.address("node-0")
    assert any(remote == node0 for _, _, remote, _ in
               netns.tcp_connections(testbed.proc("client-0").popen.pid))

    # node-1's host answers one 50 ms late; node-0's at once.
    port = int(testbed.proc("node-1").address.rsplit(":", 1)[1])
    assert _connect_s(network.address("node-1"), port) >= DELAY_S
    port = int(testbed.proc("node-0").address.rsplit(":", 1)[1])
    assert _connect_s(network.address("node-0"), port) < DELAY_S
