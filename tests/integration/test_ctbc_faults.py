"""Crash faults on a four-replica CTBC cluster of real daemon processes (f = 1).

- The leader dies (SIGKILL): the other three go on committing within a liveness bound, keep every
  block committed before the crash and do not fork.
- The dead replica restarts on its data dir: it catches up by block sync and votes again.
- A replica equivocates (two signed proposals when it leads, two signed votes per step): the
  honest replicas do not fork, and evidence naming it is committed.
- Two replicas (f + 1) stop: no quorum, so no commit for several timeouts; when they come back,
  commits resume.

Bounds below are liveness bounds, far above what a healthy loopback cluster needs (a missing
leader costs one propose timeout, 1 s with cluster.FAST), so that a loaded 2-core machine does
not fail them; they are not benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import pytest

from dualchain.apps.ctbc.registry import Evidence, EvidenceKind
from dualchain.chain.types import Block, TxKind, Vote
from tests.integration.cluster import (
    Cluster,
    assert_certified,
    assert_same_chain,
    make_senders,
    sign_memos,
)

# From the SIGKILL of the leader to the next height committed by a survivor.
RESUME_BOUND_S = 10.0
# From the SIGKILL to a survivor committing the first height whose round-0 leader is the dead
# replica (that height needs a propose timeout and a round change).
DEAD_LEADER_HEIGHT_BOUND_S = 15.0
CATCH_UP_BOUND_S = 30.0
REJOIN_BOUND_S = 30.0
# With two of four replicas down no height may be committed for this long: several timeouts,
# more than three times the round-0 sum of cluster.FAST (1.0 + 0.4 + 0.4 s).
NO_QUORUM_WINDOW_S = 6.0
RESTART_RESUME_BOUND_S = 20.0
# The byzantine test runs this many heights (the equivocator leads a quarter of them).
BYZANTINE_HEIGHTS = 16
BYZANTINE_DEADLINE_S = 40.0
# Client load of the duplicate-proposal test: per honest node, LOAD_BATCH txs of ~4 KB every
# LOAD_PERIOD_S, LOAD_TXS_PER_NODE in all (more than the run needs).
LOAD_TXS_PER_NODE = 150
LOAD_BATCH = 5
LOAD_PERIOD_S = 0.1
LOAD_PAYLOAD_BYTES = 4096


@dataclass
class Crash:
    dead: int
    survivors: list[int]
    height_at_kill: int  # the highest height any survivor had committed right after the kill
    before: list[bytes]  # block hashes 1..len(before) read from a survivor before the kill
    resumed_after: float  # seconds from the kill to the next new height on a survivor
    dead_height: int  # the first height after the kill whose round-0 leader is the dead node
    dead_height_after: float


async def crash_leader(cluster: Cluster) -> Crash:
    """Kills the replica that node 0 names as the current leader, and waits for commits to
    resume on the others."""
    await cluster.wait_all(range(cluster.nodes), 5, timeout=30)
    status = await cluster.status(0)
    dead = cluster.index_of(status.leader)
    survivors = [i for i in range(cluster.nodes) if i != dead]
    committee = list(status.committee)
    reference = survivors[0]
    known = await cluster.height(reference)
    before = [b.hash for b in await cluster.blocks(reference, 1, known)]

    killed_at = time.monotonic()
    cluster.kill(dead)
    heights = await asyncio.gather(*(cluster.height(i) for i in survivors))
    height_at_kill = max(heights)

    # The next height committed on any survivor.
    waits = [asyncio.ensure_future(cluster.wait_height(i, height_at_kill + 1, RESUME_BOUND_S))
             for i in survivors]
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    resumed_after = time.monotonic() - killed_at
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # a ClusterError (with logs) if that wait failed

    dead_height = next(
        h for h in range(height_at_kill + 1, height_at_kill + 1 + len(committee))
        if committee[h % len(committee)] == cluster.ids[dead]
    )
    await cluster.wait_height(
        reference, dead_height, DEAD_LEADER_HEIGHT_BOUND_S - (time.monotonic() - killed_at)
    )
    dead_height_after = time.monotonic() - killed_at
    return Crash(dead, survivors, height_at_kill, before, resumed_after, dead_height,
                 dead_height_after)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_leader_crash_commits_resume_without_loss_or_fork(make_cluster) -> None:
    cluster = make_cluster(nodes=4)
    crash = await crash_leader(cluster)
    print(f"killed node {crash.dead} (leader) at height {crash.height_at_kill}: next height "
          f"after {crash.resumed_after:.2f} s, its own height {crash.dead_height} after "
          f"{crash.dead_height_after:.2f} s")
    assert crash.resumed_after < RESUME_BOUND_S
    assert crash.dead_height_after < DEAD_LEADER_HEIGHT_BOUND_S

    # The survivors go on together: same chain, which still starts with every block committed
    # before the kill.
    target = crash.dead_height + 3
    await cluster.wait_all(crash.survivors, target, timeout=30)
    blocks = await assert_same_chain(cluster, crash.survivors, target)
    assert [b.hash for b in blocks[: len(crash.before)]] == crash.before
    assert_certified(cluster, blocks)
    # The dead leader's height was decided in a later round, by someone else.
    dead_block = blocks[crash.dead_height - 1]
    assert dead_block.header.view >= 1
    assert dead_block.header.proposer != cluster.ids[crash.dead]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_restarted_replica_catches_up_and_votes_again(make_cluster) -> None:
    cluster = make_cluster(nodes=4)
    crash = await crash_leader(cluster)
    dead = crash.dead
    # Let the others run ahead a little, so the restarted node has blocks to sync.
    await cluster.wait_height(crash.survivors[0], crash.dead_height + 10, timeout=30)

    ready = await cluster.astart(dead)
    restarted_at = time.monotonic()
    assert ready["height"] <= crash.height_at_kill + 1  # what it had on disk
    target = max(await asyncio.gather(*(cluster.height(i) for i in crash.survivors)))
    assert target > ready["height"]
    await cluster.wait_height(dead, target, CATCH_UP_BOUND_S)
    caught_up_after = time.monotonic() - restarted_at

    # It votes again: some later block's parent certificate carries its precommit.
    deadline = restarted_at + REJOIN_BOUND_S
    height = target
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"node {dead}'s precommit is in no certificate after restart"
        block = await cluster.wait_height(crash.survivors[0], height + 1, remaining)
        height = block.height
        qc = block.header.parent_qc
        if qc is not None and qc.height > target and cluster.ids[dead] in dict(qc.signatures):
            break
    rejoined_after = time.monotonic() - restarted_at
    print(f"node {dead} restarted at height {ready['height']}: caught up to {target} after "
          f"{caught_up_after:.2f} s; its precommit certifies height {qc.height} "
          f"after {rejoined_after:.2f} s")

    await cluster.wait_all(range(cluster.nodes), height, timeout=20)
    blocks = await assert_same_chain(cluster, [dead, *crash.survivors], height)
    assert [b.hash for b in blocks[: len(crash.before)]] == crash.before
    assert_certified(cluster, blocks)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_two_of_four_down_halts_commits_until_they_return(make_cluster) -> None:
    cluster = make_cluster(nodes=4)
    await cluster.wait_all(range(cluster.nodes), 5, timeout=30)
    down, up = [1, 2], [0, 3]
    for i in down:
        assert await cluster.astop(i) == 0  # a clean exit on SIGTERM
    halted = max(await asyncio.gather(*(cluster.height(i) for i in up)))

    # No quorum: neither survivor commits anything above `halted` for the whole window.
    started = time.monotonic()
    late = await asyncio.gather(*(cluster.no_block_within(i, halted, NO_QUORUM_WINDOW_S)
                                  for i in up))
    assert time.monotonic() - started >= NO_QUORUM_WINDOW_S - 0.5
    for i, block in zip(up, late, strict=True):
        assert block is None, f"node {i} committed height {block.height} without a quorum"
    assert all(s.height == halted or s.height == halted - 1 for s in
               await asyncio.gather(*(cluster.status(i) for i in up)))

    # Transactions submitted meanwhile: the survivors hold them and propose them by hash; the
    # returning replicas get them from the survivors' queued gossip or by fetching them.
    pending = [tx for txs in sign_memos(make_senders(4), 5, cluster.chain_id) for tx in txs]
    reply = await cluster.submit(0, pending)
    assert all(result.accepted for result in reply.results), reply

    # Back to four: commits resume, on every replica, on one chain.
    await cluster.astart_many(down)
    restarted_at = time.monotonic()
    await cluster.wait_all(range(cluster.nodes), halted + 3, timeout=RESTART_RESUME_BOUND_S)
    print(f"halted at height {halted} for {NO_QUORUM_WINDOW_S} s; height {halted + 3} on all "
          f"{time.monotonic() - restarted_at:.2f} s after the restart")
    committed = await cluster.wait_txs(0, [tx.hash for tx in pending], RESTART_RESUME_BOUND_S,
                                       from_height=halted + 1)
    last = max(committed.values())
    await cluster.wait_all(range(cluster.nodes), last, timeout=RESTART_RESUME_BOUND_S)
    blocks = await assert_same_chain(cluster, list(range(cluster.nodes)), max(halted + 3, last))
    assert_certified(cluster, blocks)


BYZANTINE = 3  # the index of the equivocating replica


class MissingEvidence(AssertionError):
    """No committed evidence of the expected kind."""


@dataclass
class Equivocator:
    cluster: Cluster
    honest: list[int]
    led: list[int]  # heights whose round-0 leader was the equivocator
    blocks: list[Block]  # the honest replicas' common chain 1..BYZANTINE_HEIGHTS
    evidence: list[tuple[int, Evidence]]  # committed evidence (height, payload)
    elapsed: float


async def load(cluster: Cluster, nodes: list[int], stop: asyncio.Event) -> None:
    """Keeps transactions of a few KB flowing in (one sender per node) until ``stop``."""
    per_sender = sign_memos(make_senders(len(nodes)), LOAD_TXS_PER_NODE, cluster.chain_id,
                            tag=b"load" + b"." * LOAD_PAYLOAD_BYTES)
    for k in range(0, LOAD_TXS_PER_NODE, LOAD_BATCH):
        if stop.is_set():
            return
        await asyncio.gather(*(cluster.submit(i, txs[k : k + LOAD_BATCH])
                               for i, txs in zip(nodes, per_sender, strict=True)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOAD_PERIOD_S)


async def run_equivocator(make_cluster, loaded: bool = False) -> Equivocator:
    """Runs a cluster whose replica BYZANTINE equivocates until the honest replicas commit
    BYZANTINE_HEIGHTS; checks that they never disagree on a block; collects the evidence.
    ``loaded``: with client transactions flowing in meanwhile."""
    cluster = make_cluster(nodes=4, byzantine={BYZANTINE: "equivocate"})
    honest = [i for i in range(cluster.nodes) if i != BYZANTINE]
    stop_load = asyncio.Event()
    load_task = asyncio.create_task(load(cluster, honest, stop_load)) if loaded else None
    try:
        return await _equivocator(cluster, honest)
    finally:
        stop_load.set()
        if load_task is not None:
            await load_task


async def _equivocator(cluster: Cluster, honest: list[int]) -> Equivocator:
    offender = cluster.ids[BYZANTINE]
    committee = list((await cluster.status(0)).committee)
    # The equivocator votes twice in every step of every height (the second vote for a made-up
    # block) and, in the rounds it leads, sends two different signed proposals (half the peers
    # get one first, half the other). Run until it has led several heights.
    target = BYZANTINE_HEIGHTS
    led = [h for h in range(1, target + 1) if committee[h % len(committee)] == offender]
    assert len(led) >= 3
    started = time.monotonic()
    # Each honest replica's blocks as it announced them at commit time...
    announced = await asyncio.gather(
        *(cluster.follow(i, 1, target, BYZANTINE_DEADLINE_S) for i in honest)
    )
    elapsed = time.monotonic() - started
    for i, blocks in zip(honest, announced, strict=True):
        for a, b in zip(announced[0], blocks, strict=False):
            assert a.hash == b.hash, (
                f"honest nodes {honest[0]} and {i} committed different blocks at height "
                f"{a.height}"
            )
    # ...and as they hold them now.
    blocks = await assert_same_chain(cluster, honest, target)
    assert [b.hash for b in blocks] == [b.hash for b in announced[0][:target]]
    assert_certified(cluster, blocks)

    evidence = [
        (block.height, Evidence.decode(tx.payload))
        for block in blocks for tx in block.transactions if tx.kind == TxKind.EVIDENCE
    ]
    for height, ev in evidence:
        first, second = ev.items
        signers = {m.voter if isinstance(m, Vote) else m.proposer for m in (first, second)}
        assert signers == {offender}, f"evidence at height {height} names {signers}"
    kinds = sorted({ev.kind.name for _, ev in evidence})
    print(f"height {target} in {elapsed:.1f} s; node {BYZANTINE} led heights {led}; "
          f"{len(evidence)} evidence txs committed ({kinds}) at heights "
          f"{sorted({h for h, _ in evidence})}")
    return Equivocator(cluster, honest, led, blocks, evidence, elapsed)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_equivocating_replica_cannot_fork_and_is_reported_on_chain(make_cluster) -> None:
    run = await run_equivocator(make_cluster)
    if not run.evidence:
        raise MissingEvidence("no EVIDENCE transaction was committed")
    # Its double votes are proven on chain (the evidence names it: checked in run_equivocator).
    assert any(ev.kind == EvidenceKind.DUPLICATE_VOTE for _, ev in run.evidence)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_duplicate_proposals_are_proven_on_chain(make_cluster) -> None:
    run = await run_equivocator(make_cluster, loaded=True)
    proven = {ev.items[0].height for _, ev in run.evidence
              if ev.kind == EvidenceKind.DUPLICATE_PROPOSAL}
    # Every height it led with two proposals, except the last few (their evidence may still be
    # on its way into a block).
    expected = [h for h in run.led if h <= BYZANTINE_HEIGHTS - 3]
    missing = [h for h in expected if h not in proven]
    if missing:
        refusals = [line for line in run.cluster.grep_logs("equivocation by") if "limit" in line]
        raise MissingEvidence(
            f"the equivocator led heights {run.led} with two proposals each; no "
            f"DUPLICATE_PROPOSAL evidence for heights {missing} was committed; refused "
            "reports:\n" + "\n".join(refusals[-12:])
        )
