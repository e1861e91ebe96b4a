"""Chaos on a four-replica CTBC cluster of real daemon processes under signed client load.

The load generator of ``dualchain bench consensus`` (its own process) submits pre-signed MEMO
transactions to three of the replicas; meanwhile the test

1. SIGKILLs the fourth when it is the leader (of the next height: the round-0 proposer, so that
   height needs a round change) and measures the time to the first commit after the kill;
2. SIGSTOPs one of the survivors for STOP_S (with one replica dead that leaves no quorum, so
   commits stop) and SIGCONTs it; commits resume;
3. restarts the killed replica on its data dir once the others are CATCH_UP_LEAD heights ahead,
   and measures its catch-up (to the height the others had when it was ready).

Then every replica must hold the same block at every height (0 forks) and every transaction a
replica acknowledged (``accepted`` in its SubmitTxs reply) must be on the chain exactly once
(0 lost, 0 duplicated), and no transaction twice.

The killed replica gets no client load: a mempool is not durable, and what a replica admitted
in its last gossip period (20 ms) before a SIGKILL dies with it (docs/operations.md).

Bounds are liveness bounds for a loaded 2-core machine, not benchmarks: the figures are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dualchain.bench.loadgen import RECORD, LoadSpec
from dualchain.proto.v1 import chain_pb2 as chain_pb
from tests.integration.cluster import ALGORITHM, Cluster, assert_certified, assert_same_chain

VICTIM = 3  # the replica killed when it leads; it gets no client load
STOPPED = 2  # the replica paused with SIGSTOP
STOP_S = 5.0
RATE = 100.0  # offered transactions per second, over the three loaded replicas
LOAD_S = 40.0
SENDERS = 30
RESUME_BOUND_S = 15.0
CATCH_UP_BOUND_S = 45.0
CATCH_UP_LEAD = 40  # heights the others commit past the killed replica before it restarts
COMMIT_BOUND_S = 90.0
SIGNING_TIMEOUT_S = 120.0


class LoadGen:
    """``python -m dualchain.bench.loadgen`` as a child process, killed by PID at the end."""

    def __init__(self, cluster: Cluster, targets: list[int], directory: Path) -> None:
        self.times_file = directory / "loadgen-times.bin"
        spec = LoadSpec(chain_id=cluster.chain_id, algorithm=ALGORITHM.label,
                        targets=[cluster.addresses[i] for i in targets],
                        txs=int(RATE * LOAD_S), senders=SENDERS, rate=RATE, batch=20,
                        times_file=str(self.times_file), timestamp_ms=time.time_ns() // 10**6,
                        rpc_timeout_s=STOP_S + 10)
        self.log = (directory / "loadgen.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dualchain.bench.loadgen", json.dumps(spec.__dict__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)

    async def line(self, event: str, timeout: float) -> dict:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline),
                                         deadline - time.monotonic())
            if not raw:
                raise AssertionError(f"the load generator exited ({self.proc.wait()}) before "
                                     f"{event!r}")
            message = json.loads(raw)
            if message.get("event") == event:
                return message

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def acknowledged(self) -> list[bytes]:
        data = self.times_file.read_bytes()
        return [RECORD.unpack_from(data, i)[0] for i in range(0, len(data), RECORD.size)]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


async def kill_when_leading(cluster: Cluster, victim: int, timeout: float) -> int:
    """Follows node 0's commits on one stream and SIGKILLs ``victim`` as soon as it is the
    round-0 leader of the next height; returns the height committed just before."""
    committee = list((await cluster.status(0)).committee)
    stream = cluster.chain(0).SubscribeBlocks(
        chain_pb.SubscribeBlocksRequest(from_height=await cluster.height(0)), timeout=timeout)
    try:
        async for message in stream:
            height = message.header.height
            if committee[(height + 1) % len(committee)] == cluster.ids[victim]:
                cluster.kill(victim)
                return height
    finally:
        stream.cancel()
    raise AssertionError("node 0's block stream ended")


async def first_commit_after(cluster: Cluster, nodes: list[int], height: int,
                             timeout: float) -> None:
    """Returns once any of ``nodes`` commits a height above ``height``."""
    waits = [asyncio.ensure_future(cluster.wait_height(i, height + 1, timeout)) for i in nodes]
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_chaos_under_load_keeps_one_chain_and_every_acknowledged_tx(
        make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(nodes=4)
    loaded = [i for i in range(cluster.nodes) if i != VICTIM]
    survivors = loaded
    loadgen = LoadGen(cluster, loaded, tmp_path)
    try:
        signed = await loadgen.line("signed", SIGNING_TIMEOUT_S)
        await cluster.wait_all(range(cluster.nodes), 3, timeout=30)
        loadgen.go()
        await cluster.wait_height(0, await cluster.height(0) + 5, timeout=30)

        # 1. The leader dies.
        before_kill = await kill_when_leading(cluster, VICTIM, timeout=30)
        killed_at = time.monotonic()
        at_kill = max(await asyncio.gather(*(cluster.height(i) for i in survivors)))
        assert at_kill == before_kill, "the victim was killed after its height was committed"
        await first_commit_after(cluster, survivors, at_kill, RESUME_BOUND_S)
        resume_s = time.monotonic() - killed_at

        # 2. A survivor is paused: no quorum until it continues.
        await cluster.wait_height(0, at_kill + 3, timeout=30)
        paused = cluster.procs[STOPPED]
        assert paused is not None
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STOP_S)  # the fault's duration, not a synchronisation
            halted = max(await asyncio.gather(*(cluster.height(i) for i in survivors
                                                if i != STOPPED)))
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        continued_at = time.monotonic()
        await first_commit_after(cluster, survivors, halted, RESUME_BOUND_S)
        after_cont_s = time.monotonic() - continued_at

        # 3. The killed replica restarts, once the others are well ahead, and catches up.
        await cluster.wait_height(0, before_kill + CATCH_UP_LEAD, timeout=60)
        ready = await cluster.astart(VICTIM)
        restarted_at = time.monotonic()
        target = max(await asyncio.gather(*(cluster.height(i) for i in survivors)))
        await cluster.wait_height(VICTIM, target, CATCH_UP_BOUND_S)
        catch_up_s = time.monotonic() - restarted_at

        done = await loadgen.line("done", LOAD_S * 4)
        acknowledged = loadgen.acknowledged()
        assert acknowledged and len(acknowledged) == done["accepted"]
        committed = await cluster.wait_txs(0, acknowledged, COMMIT_BOUND_S)
        last = max(max(committed.values()), target)
        await cluster.wait_all(range(cluster.nodes), last, timeout=COMMIT_BOUND_S)
    finally:
        loadgen.close()

    blocks = await assert_same_chain(cluster, list(range(cluster.nodes)), last)  # 0 forks
    assert_certified(cluster, blocks)
    counts = Counter(tx.hash for block in blocks for tx in block.transactions)
    duplicated = [h for h, n in counts.items() if n > 1]
    lost = [h for h in acknowledged if h not in counts]
    figures = {
        "signed": signed["txs"], "acknowledged": len(acknowledged),
        "loadgen": {k: done[k] for k in ("accepted", "refused", "retried", "refusals")},
        "killed_leader": VICTIM, "killed_after_height": before_kill,
        "resume_after_kill_s": round(resume_s, 2),
        "paused": STOPPED, "paused_s": STOP_S, "resume_after_sigcont_s": round(after_cont_s, 2),
        "restarted_at_height": ready["height"], "caught_up_to": target,
        "catch_up_s": round(catch_up_s, 2), "height": last,
        "forks": 0, "lost": len(lost), "duplicated": len(duplicated),
    }
    print("chaos:", json.dumps(figures))
    assert not lost, f"{len(lost)} acknowledged transactions never committed"
    assert not duplicated, f"{len(duplicated)} transactions committed more than once"
    assert resume_s < RESUME_BOUND_S and catch_up_s < CATCH_UP_BOUND_S
