"""`dualchain bench consensus`: throughput and latency of a real CTBC testnet on this machine.

N chain daemons run as separate processes on loopback; a load generator in its own process
(``loadgen.py``) submits pre-signed transactions with 256-byte payloads in batches at an offered
rate; this process subscribes to committed blocks on replica 0 and matches each committed
transaction with its submit time.

- ``tps``: transactions committed per second during the measurement window, as the subscriber
  sees them;
- ``latency_p50_s`` / ``latency_p99_s``: submit (the batch's send time) to commit (its block
  reaching the subscriber);
- ``cpu_percent_per_node``: CPU time of each daemon process over the window (100 = one core);
- ``view_changes``: rounds started after round 0 (the most any replica counted);
- ``signature_checks_per_committed_tx``: signatures each replica checked per transaction it
  committed, the median (about 1: each checked once; votes and still-pending ones add a little);
- ``cpu_percent_per_replica_mean``: the mean of those; with ``rate=0`` (no load generator) the
  idle chain's cost, beside ``blocks_per_s`` (blocks committed per second in the window);
- ``messages_per_tx`` / ``bytes_per_tx``: gossip messages and bytes all replicas received over
  the window (votes, bundles, proposals, transaction batches), per committed transaction;
  ``heights``: blocks committed in the window; ``linear_votes``: votes through collectors
  (False: ``--all-to-all``);
- ``refused_busy``: client transactions the replicas turned away under admission control (the
  load generator retries them after a back-off).

With ``hosts="netns"`` every replica runs in a network namespace of its own ("ctbc-I") and the
load generator in another ("loadgen"), each with its own address and optionally an emulated link
(``netem``: host pattern -> spec, see ``dualchain.deploy.netns``); this process stays in the root
namespace, so latency then includes replica 0's link delay to it.

Every replica checks every transaction's signature once: on admission (directly from the client
or by gossip from another replica), or while validating a proposal whose transactions it had not
seen. The signature cache only stops a replica from checking the same signature twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import psutil

from dualchain.bench.loadgen import RECORD, LoadSpec, effective_batch
from dualchain.chain.clock import now_ms
from dualchain.chain.genesis import ConsensusParams, Genesis, LedgerLimits
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import channel_options
from dualchain.chain.types import Block
from dualchain.chain.wire import block_from_proto
from dualchain.deploy.processes import free_ports
from dualchain.deploy.testnet import TestnetPlan, make_testnet
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc
from dualchain.runtime.supervisor import Supervisor

CHAIN_ID = "bench-ctbc"


def _scrape(host: str, port: int, name: str) -> float:
    """The first sample of metric ``name`` (``name{labels}`` to pick one series); 0 if absent."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _peer_traffic(hosts: list[str], ports: list[int]) -> tuple[float, float]:
    """Gossip messages and bytes all replicas received so far (every kind)."""
    messages = octets = 0.0
    for host, port in zip(hosts, ports, strict=True):
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("dualchain_chain_peer_messages_total{"):
                    messages += float(line.rsplit(" ", 1)[1])
                elif line.startswith("dualchain_chain_peer_bytes_total{"):
                    octets += float(line.rsplit(" ", 1)[1])
    return messages, octets


def check_cost_us(algorithm: Algorithm, checks: int = 300) -> float:
    """CPU microseconds of one ML-DSA check of a transaction-sized message on this thread,
    measured while the chain runs (so under the same contention as the replicas' checks)."""
    signer = Signer.generate(algorithm)
    message = os.urandom(400)
    signature = signer.sign(Domain.TRANSACTION, message)
    key = signer.backend.public_key(algorithm, signer.public_key)
    started = time.thread_time()
    for _ in range(checks):
        key.verify(signature, message, Domain.TRANSACTION.value)
    return (time.thread_time() - started) / checks * 1e6


def _timeouts(ms: tuple[int, int, int, int] | None) -> dict[str, int]:
    """Genesis timeouts (propose, prevote, precommit, delta in ms); None: the defaults."""
    if ms is None:
        return {}
    return dict(zip(("timeout_propose_ms", "timeout_prevote_ms", "timeout_precommit_ms",
                     "timeout_delta_ms"), ms, strict=True))


def _signature_checks(hosts: list[str], ports: list[int]) -> dict[str, float]:
    """Signatures each replica checked per transaction it committed (1.0 when every signature
    is checked exactly once; more when transactions are checked but not committed, or twice),
    the median over the replicas."""
    ratios = []
    for host, port in zip(hosts, ports, strict=True):
        committed = _scrape(host, port, "dualchain_chain_txs_committed_total")
        if committed:
            ratios.append(_scrape(host, port, "dualchain_chain_signatures_checked_total")
                          / committed)
    return {"signature_checks_per_committed_tx": round(statistics.median(ratios), 3)} \
        if ratios else {}


class _Subscriber:
    """Collects the commit time of every transaction in blocks committed on one replica."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.commit_times: dict[bytes, float] = {}
        self.blocks: list[tuple[int, float, int]] = []  # height, time, txs

    async def run(self, from_height: int) -> None:
        async with grpc.aio.insecure_channel(self.address, options=channel_options()) as ch:
            stream = chain_pb2_grpc.ChainServiceStub(ch).SubscribeBlocks(
                chain_pb2.SubscribeBlocksRequest(from_height=from_height))
            async for message in stream:
                now = time.time()
                block: Block = block_from_proto(message)
                self.blocks.append((block.height, now, len(block.transactions)))
                for tx in block.transactions:
                    self.commit_times[tx.hash] = now


def consensus_benchmark(
    nodes: int = 4,
    duration: float = 20.0,
    algorithm: Algorithm = Algorithm.ML_DSA_44,
    rate: float = 2500.0,
    senders: int = 512,
    batch: int = 256,
    block_interval_ms: int = 250,
    max_block_txs: int = 5000,
    directory: Path | None = None,
    progress: Callable[[str], None] | None = None,
    hosts: str = "local",
    netem: Mapping[str, Any] | None = None,
    netem_backend: str = "auto",
    linear_votes: bool = True,
    timeouts_ms: tuple[int, int, int, int] | None = None,
) -> dict:
    """Runs the benchmark in a temporary directory; ``progress`` gets a line every second."""
    if hosts not in ("local", "netns") or (netem and hosts != "netns"):
        raise ValueError(f"hosts {hosts!r}: local or netns (netem needs netns)")
    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-consensus-") as tmp:
        network = None
        if hosts == "netns":
            from dualchain.deploy import netns

            network = netns.prepare(netns.run_prefix(tmp), [
                *(f"ctbc-{i}" for i in range(nodes)), "loadgen"], netem, netem_backend)
        try:
            result = _run(Path(tmp), nodes, duration, algorithm, rate, senders, batch,
                          block_interval_ms, max_block_txs, progress or (lambda line: None),
                          network, linear_votes, timeouts_ms)
        finally:
            if network is not None:
                network.teardown()
        result["hosts"] = network.describe() if network is not None else "local"
        return result


def _run(tmp: Path, nodes: int, duration: float, algorithm: Algorithm, rate: float,
         senders: int, batch: int, block_interval_ms: int, max_block_txs: int,
         progress: Callable[[str], None], network: Any = None,
         linear_votes: bool = True,
         timeouts_ms: tuple[int, int, int, int] | None = None) -> dict:
    ports = free_ports(2 * nodes)
    ip = [network.address(f"ctbc-{i}") if network else "127.0.0.1" for i in range(nodes)]
    configs = make_testnet(tmp, TestnetPlan(
        nodes=nodes, algorithm=algorithm, ports=tuple(ports[:nodes]), chain_id=CHAIN_ID,
        consensus=ConsensusParams(block_interval_ms=block_interval_ms, epoch_length=1000,
                                  **_timeouts(timeouts_ms)),
        limits=LedgerLimits(max_block_txs=max_block_txs),
    ))
    # Each replica listens on its host's address (all 127.0.0.1 locally).
    moved = {f"127.0.0.1:{p}": f"{ip[i]}:{p}" for i, p in enumerate(ports[:nodes])}
    genesis = Genesis.load(tmp / "genesis.json")
    if network is not None:
        genesis = replace(genesis, validators=tuple(replace(v, address=moved[v.address])
                                                    for v in genesis.validators))
        genesis.save(tmp / "genesis.json")
    for i, path in enumerate(configs):  # give each replica a metrics endpoint
        config = json.loads(path.read_text())
        config["metrics_port"] = ports[nodes + i]
        config["linear_votes"] = linear_votes
        config["listen"] = moved[config["listen"]]
        config["peers"] = [moved[a] for a in config["peers"]]
        path.write_text(json.dumps(config))
    targets = list(moved.values())
    supervisor = Supervisor()  # every process dies with the benchmark, whatever ends it

    def host(name: str) -> list[str]:  # the argv prefix that runs a process on host ``name``
        if network is None:
            return []
        network.create()
        return network.exec_prefix(name)

    try:
        daemons = [supervisor.spawn(
            f"node-{i}", [*host(f"ctbc-{i}"), sys.executable, "-m", "dualchain.cli",
                          "chain", "--kind", "ctbc", "--config", str(path), "--log-level",
                          "WARNING"], cwd=tmp, log=tmp / f"node-{i}.log")
            for i, path in enumerate(configs)]
        supervisor.wait_ready(daemons, 60)
        progress(f"{nodes} CTBC replicas ready ({algorithm.label}); the load generator is "
                 "signing its transactions")
        loadgen = None
        if rate > 0:
            total = int(rate * duration * 1.2) + batch
            spec = LoadSpec(CHAIN_ID, algorithm.label, targets, total, senders, rate, batch,
                            str(tmp / "submit-times.bin"), now_ms())
            loadgen = supervisor.spawn(
                "loadgen", [*host("loadgen"), sys.executable, "-m", "dualchain.bench.loadgen",
                            json.dumps(spec.__dict__)], cwd=tmp, log=None, stdin=True)
            supervisor.wait_event(loadgen, "signed", 600)
            progress(f"submitting {rate:.0f} tx/s for {duration:.0f} s")
        else:
            progress(f"idle chain (no load) for {duration:.0f} s")
        traffic = [_peer_traffic(ip, ports[nodes:])]
        result = asyncio.run(_measure([d.popen for d in daemons],
                                      loadgen.popen if loadgen else None, targets,
                                      duration, progress, algorithm))
        traffic.append(_peer_traffic(ip, ports[nodes:]))
        if loadgen is not None:
            os.kill(loadgen.pid, signal.SIGTERM)
        view_changes = max(_scrape(ip[i], ports[nodes + i], "dualchain_chain_view_changes_total")
                           for i in range(nodes))
        checks = _signature_checks(ip, ports[nodes:])
        busy = sum(_scrape(ip[i], ports[nodes + i], 'dualchain_chain_rejected_total{reason="busy"}')
                   for i in range(nodes))
    finally:
        supervisor.close()  # SIGKILL of every process group, by id
    submit_times = _read_submit_times(tmp / "submit-times.bin")
    commits, window_start, window_end, cpu, heights, check_us = result
    in_window = [t for t in commits.values() if window_start <= t <= window_end]
    latencies = sorted(commits[h] - submit_times[h] for h in commits if h in submit_times)
    # Traffic between the snapshots before and after the window (slightly wider than it).
    messages, octets = (after - before for before, after in zip(*traffic, strict=True))
    per_tx = max(len(in_window), 1)
    return {
        "benchmark": "consensus",
        "nodes": nodes,
        "alg": algorithm.label,
        "tps": round(len(in_window) / (window_end - window_start), 1),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3)
        if latencies else None,
        "committed": len(in_window),
        "view_changes": int(view_changes),
        "heights": heights,
        "messages_per_tx": round(messages / per_tx, 2) if in_window else None,
        "bytes_per_tx": round(octets / per_tx) if in_window else None,
        "peer_messages_per_s": round(messages / (window_end - window_start), 1),
        "linear_votes": linear_votes,
        "cpu_percent_per_node": cpu,
        "cpu_percent_per_replica_mean": round(statistics.fmean(cpu), 2),
        # CPU per committed transaction per replica against one signature check in this run
        "cpu_us_per_tx_per_replica": round(statistics.fmean(cpu) / 100 * 1e6 / tps, 1)
        if (tps := len(in_window) / (window_end - window_start)) else None,
        "signature_check_us": round(check_us, 1),
        "blocks_per_s": round(heights / (window_end - window_start), 2),
        "offered_rate_tps": rate,
        "duration_s": duration,
        "payload_bytes": 256,
        "batch": effective_batch(batch, rate, nodes) if rate > 0 else 0,
        "block_interval_ms": block_interval_ms,
        "timeouts_ms": [genesis.consensus.timeout_propose_ms, genesis.consensus.timeout_prevote_ms,
                        genesis.consensus.timeout_precommit_ms,
                        genesis.consensus.timeout_delta_ms],
        "empty_blocks_interval_ms": genesis.consensus.empty_blocks_interval_ms,
        "max_block_txs": max_block_txs,
        "committee_size": genesis.consensus.committee_size,
        "every_replica_verifies_signatures": True,
        **checks,
        "refused_busy": int(busy),
        "machine": {"cpus": os.cpu_count()},
    }


async def _measure(
    daemons: list[subprocess.Popen[bytes]], loadgen: subprocess.Popen[bytes] | None,
    targets: list[str], duration: float, progress: Callable[[str], None],
    algorithm: Algorithm,
) -> tuple[dict[bytes, float], float, float, list[float], int, float]:
    """Commit times, the window, CPU percent per daemon, blocks committed in the window and the
    CPU cost of one signature check measured in the middle of it."""
    subscriber = _Subscriber(targets[0])
    async with grpc.aio.insecure_channel(targets[0]) as ch:
        status = await chain_pb2_grpc.ChainServiceStub(ch).GetStatus(
            chain_pb2.GetStatusRequest(), timeout=10)
    task = asyncio.create_task(subscriber.run(status.height + 1))
    processes = [psutil.Process(p.pid) for p in daemons]
    cpu_before = [sum(p.cpu_times()[:2]) for p in processes]
    start = time.time()
    if loadgen is not None:
        assert loadgen.stdin is not None
        loadgen.stdin.write(b"go\n")
        loadgen.stdin.flush()
    check = asyncio.get_running_loop().run_in_executor(None, _check_later, algorithm, start,
                                                       duration)
    while time.time() < start + duration:  # the measurement window itself
        await asyncio.sleep(min(1.0, start + duration - time.time()))
        height = subscriber.blocks[-1][0] if subscriber.blocks else status.height
        progress(f"t={time.time() - start:4.1f}s height {height} committed "
                 f"{len(subscriber.commit_times)} txs")
    end = time.time()
    cpu = [round((sum(p.cpu_times()[:2]) - before) / (end - start) * 100, 1)
           for p, before in zip(processes, cpu_before, strict=True)]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await task
    blocks = sum(1 for _, t, _ in subscriber.blocks if start <= t <= end)
    return subscriber.commit_times, start, end, cpu, blocks, await check


def _check_later(algorithm: Algorithm, start: float, duration: float) -> float:
    time.sleep(max(0.0, start + duration / 2 - time.time()))  # mid-window, under full load
    return check_cost_us(algorithm)


def _read_submit_times(path: Path) -> dict[bytes, float]:
    if not path.exists():
        return {}
    data = path.read_bytes()
    return dict(RECORD.iter_unpack(data))
