"""CMBC, the proof-of-work management chain, as real processes: daemons and miners on loopback.

- Three daemons and two miners build one chain every daemon agrees on, and retargeting brings
  the block interval to the configured one.
- A network split (TCP proxies between the daemons, cut for real) lets both sides mine their own
  branch; after healing, every daemon converges on the most-work chain, the transactions of the
  losing branch are mined again, and no block any daemon announced as final is ever reverted.
- When a miner joins, the difficulty rises within a few retarget periods; when it leaves, it
  falls.

Hash rates on a shared machine are noisy, so initial difficulties come from a measurement of
this machine's hash rate and the assertions use generous bands (documented where they are).
Every wait awaits an event (SubscribeBlocks streams, a miner's ready line); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib

from dualchain.chain.consensus.pow import PowParams, difficulty_of, target_from_bytes
from dualchain.chain.types import Block
from tests.integration.cluster import make_senders, sign_memos
from tests.integration.cmbc_cluster import CmbcCluster, hash_rate

INTERVAL_MS = 500


def difficulty(block: Block) -> float:
    return difficulty_of(target_from_bytes(block.header.pow_target))


async def test_daemons_agree_and_intervals_settle(make_cmbc_cluster) -> None:
    """Two miners with 30 % of a core each. The chain starts eight times too easy; after a few
    retargets (every 5 blocks) the mean interval of the last three windows must be within
    [interval / 3, interval * 3]: generous, because a 15-interval mean of exponential waits has
    a spread of about a quarter, each retarget sees only four intervals, and other processes
    share the two cores; a broken retarget (wrong direction, no clamp, stuck) lands far
    outside it within 30 blocks. The first retarget (height 10) must also have raised the
    difficulty at least 1.5x: its window (heights 5-9) ran at under half the interval. That
    is checked against the window itself, not the start's calibration: a CI run once measured
    the hash rate at a fast moment and then hashed six times slower, so the chain, rightly,
    never got far above its start."""
    duty = 0.3
    equilibrium = hash_rate() * 2 * duty * INTERVAL_MS / 1000
    start = max(1, int(equilibrium / 8))
    pow_params = PowParams(initial_difficulty=start, block_interval_ms=INTERVAL_MS,
                           retarget_interval=5, finality_depth=6)
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=3, miners=2, pow=pow_params)
    await cluster.start_miner(0, node=0, duty=duty)
    await cluster.start_miner(1, node=2, duty=duty)

    # Transactions sent to the daemon without a miner reach the miners by gossip.
    (txs,) = sign_memos(make_senders(1), 5, cluster.chain_id, tag=b"agree")
    await cluster.submit(1, txs)

    last = 30
    await cluster.wait_height(0, last, timeout=90)
    # Stop the miners one after the other: with one miner left no new branch can start, so
    # after its next blocks every daemon must hold the very same chain.
    cluster.kill_miner(1)
    await cluster.wait_height(0, (await cluster.height(0)) + 2, timeout=30)
    cluster.kill_miner(0)
    head = await cluster.status(0)
    await asyncio.gather(*(cluster.wait_height(i, head.height, timeout=30) for i in (1, 2)))
    statuses = [await cluster.status(i) for i in range(3)]
    assert {bytes(s.head_hash) for s in statuses} == {bytes(head.head_hash)}, statuses
    assert {bytes(s.final_hash) for s in statuses} == {bytes(head.final_hash)}

    blocks = await cluster.blocks(0, 1, head.height)
    found = await cluster.wait_txs(1, [tx.hash for tx in txs], timeout=10, final_only=True)
    assert len(found) == len(txs)
    miners = {b.header.proposer for b in blocks}
    assert miners == set(cluster.miner_ids), "both miners should have found blocks"
    for block in blocks:
        reward = block.transactions[0]
        assert reward.sender == block.header.proposer

    stamps = [b.header.timestamp_ms for b in blocks]  # stamps[h - 1] is block h's
    window = 15
    mean_ms = (stamps[last - 1] - stamps[last - 1 - window]) / window
    first_ms = (stamps[7] - stamps[2]) / 5  # blocks 3..8: before the first retarget
    report = (f"first intervals {first_ms:.0f} ms, last {window} {mean_ms:.0f} ms, difficulty "
              f"{start} -> {difficulty(blocks[last - 1]):.0f} (equilibrium estimate "
              f"{equilibrium:.0f})")
    print(report)
    assert INTERVAL_MS / 3 <= mean_ms <= INTERVAL_MS * 3, report
    # Retargeting moved the difficulty up from its far too easy start.
    window_ms = (stamps[8] - stamps[4]) / 4  # heights 5..9: the window of height 10
    assert window_ms < INTERVAL_MS / 2, f"the start was not too easy; {report}"
    assert difficulty(blocks[9]) >= 1.5 * start, report


async def test_split_heals_to_the_most_work_chain(make_cmbc_cluster) -> None:
    """Daemons {0, 1} with miner 0 and {2} with miner 1, cut apart by their proxies, mine
    separately, then heal.

    The split lasts until both sides have mined a transaction of their own and three blocks,
    and after healing the links need up to a few seconds to reconnect, while both sides go on
    mining. By the split, three retargets have brought the chain to about two blocks a second
    (whatever the load on this machine), so each side alone mines about one a second: finality
    depth 20 covers that with room to spare, no final block is in conflict, and healing needs
    no final block back."""
    duty = 0.3
    equilibrium = hash_rate() * 2 * duty * INTERVAL_MS / 1000
    k = 20
    pow_params = PowParams(initial_difficulty=max(1, int(equilibrium)),
                           block_interval_ms=INTERVAL_MS, retarget_interval=5,
                           finality_depth=k)
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=3, miners=2, pow=pow_params,
                                                   proxied=True)
    finals: list[list[tuple[int, bytes]]] = [[] for _ in range(3)]
    recorders = [asyncio.create_task(cluster.record_final(i, finals[i])) for i in range(3)]
    try:
        await cluster.start_miner(0, node=0, duty=duty)
        await cluster.start_miner(1, node=2, duty=duty)
        # Some blocks are final before the split, and the rate has settled (retargets at 10,
        # 15 and 20).
        await asyncio.gather(*(cluster.wait_height(i, k + 2, timeout=60) for i in range(3)))

        cluster.split([0, 1], [2])
        cut = {i: await cluster.status(i) for i in range(3)}
        fork_floor = min(s.height for s in cut.values())
        # Each side gets its own transactions, which the other side cannot see.
        side_a, side_b = sign_memos(make_senders(2), 4, cluster.chain_id, tag=b"split")
        await cluster.submit(1, side_a)
        await cluster.submit(2, side_b)
        mined_a, mined_b = await asyncio.gather(
            cluster.wait_txs(1, [t.hash for t in side_a], timeout=30, from_height=fork_floor),
            cluster.wait_txs(2, [t.hash for t in side_b], timeout=30, from_height=fork_floor))
        # A few blocks of their own on each side, so healing takes a multi-block reorg; but
        # not more than k / 2 on either (a side starved of CPU would let the other run deep).
        await _first_of(
            asyncio.gather(cluster.wait_height(1, cut[1].height + 3, timeout=30),
                           cluster.wait_height(2, cut[2].height + 3, timeout=30)),
            cluster.wait_height(1, fork_floor + k // 2, timeout=30),
            cluster.wait_height(2, fork_floor + k // 2, timeout=30))
        # Where each side mined its transactions, as block hashes.
        split_blocks = {
            "a": {h: (await cluster.block(1, height)).hash for h, height in mined_a.items()},
            "b": {h: (await cluster.block(2, height)).hash for h, height in mined_b.items()},
        }
        during = {i: await cluster.status(i) for i in range(3)}
        assert bytes(during[1].head_hash) != bytes(during[2].head_hash), "no fork happened"
        fork = await _fork_height(cluster, 1, 2, min(during[1].height, during[2].height))
        depth = max(during[1].height, during[2].height) - fork
        # Room is left for the blocks mined while the links reconnect after healing.
        assert depth <= k - 6, f"the split ran {depth} blocks deep: raise finality_depth"
        print(f"split: fork at {fork}, heads {during[1].height} and {during[2].height}")

        cluster.heal()
        # Every transaction of both sides ends up final on every daemon: the losing side's
        # were put back into its mempool by the reorg and mined again.
        every = [t.hash for t in (*side_a, *side_b)]
        await asyncio.gather(*(cluster.wait_txs(i, every, timeout=60, final_only=True)
                               for i in range(3)))
        cluster.kill_miners()
    finally:
        for task in recorders:
            task.cancel()
        for task in recorders:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    statuses = [await cluster.status(i) for i in range(3)]
    common = min(s.final_height for s in statuses)
    chains = [await cluster.canonical_hashes(i, 1, common) for i in range(3)]
    assert chains[0] == chains[1] == chains[2], "final chains differ after healing"
    canonical = dict(enumerate(chains[0], start=1))

    # The losing side's branch is gone, and its transactions sit in other blocks now.
    lost = [side for side, blocks in split_blocks.items()
            if not set(blocks.values()) <= set(canonical.values())]
    assert lost, "neither side's split blocks were replaced: no reorg happened"
    for side in lost:
        where = await cluster.wait_txs(0, list(split_blocks[side]), timeout=10, final_only=True)
        for tx_hash, height in where.items():
            assert canonical[height] != split_blocks[side][tx_hash]

    # No daemon ever announced a final block it later dropped: its final stream never stepped
    # back (a reorg would resend from the fork) and each block is still canonical there.
    for i, recorded in enumerate(finals):
        heights = [h for h, _ in recorded]
        assert heights == list(range(1, len(heights) + 1)), f"node {i} re-sent final blocks"
        assert len(heights) >= common - 1, f"node {i} reported {len(heights)} final blocks"
        for height, block_hash in recorded:
            if height <= common:
                assert canonical[height] == block_hash, f"node {i}: final block {height} reverted"
            else:
                assert (await cluster.block(i, height)).hash == block_hash


async def _first_of(*waits) -> None:
    """Awaits the first of ``waits`` to finish (raising its error, if any); cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _fork_height(cluster: CmbcCluster, a: int, b: int, top: int) -> int:
    """The highest height at which nodes ``a`` and ``b`` hold the same block."""
    for height in range(top, -1, -1):
        if (await cluster.block(a, height)).hash == (await cluster.block(b, height)).hash:
            return height
    raise AssertionError("no common genesis")


async def test_difficulty_follows_miners_joining_and_leaving(make_cmbc_cluster) -> None:
    """A weak miner (20 % duty) alone, then a strong one (100 %) joins, then leaves; retargets
    every 4 blocks, at most x4 each.

    A retarget sees only three intervals, so single values are noisy (tens of percent); the
    bands are wide against that, and narrow against a retarget that does not follow: within
    six retargets of the join, the difficulty must reach twice the mean the weak miner had
    alone (the strong miner hashes about six times as fast on an idle machine, less on a busy
    one), and within three retargets of the leave, fall to half its peak."""
    R, weak_duty = 4, 0.2
    pow_params = PowParams(
        initial_difficulty=max(1, int(hash_rate() * weak_duty * INTERVAL_MS / 1000)),
        block_interval_ms=INTERVAL_MS, retarget_interval=R, finality_depth=6)
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=1, miners=2, pow=pow_params)

    def next_boundary(height: int) -> int:
        return (height // R + 1) * R

    await cluster.start_miner(0, node=0, duty=weak_duty)
    alone = await cluster.follow(0, 1, 5 * R, timeout=90)
    # In force from the first retarget (height 2R) on: the weak miner's own difficulty, over
    # three retargets (one retarget of three intervals varies by about 100%).
    before = sum(difficulty(b) for b in alone[2 * R - 1:]) / len(alone[2 * R - 1:])

    await cluster.start_miner(1, node=0, duty=1.0)
    joined_at = await cluster.height(0)
    # Up to the sixth retarget after the join (the first window may hold the strong miner's
    # start-up, its worker processes spawning, and on a busy 2-core machine ratios of three
    # noisy intervals fall short: a CI run saw 1.34x after four), or until the difficulty is
    # four times the weak miner's: no need to go higher, the weak miner alone must bring it
    # back down, at four times the interval.
    limit = next_boundary(joined_at) + 5 * R
    peak, height = before, joined_at
    while peak < 4 * before and height < limit:
        block = await cluster.wait_height(0, height + 1, timeout=60)
        height, peak = block.height, max(peak, difficulty(block))
    report = f"difficulty: weak miner alone {before:.0f}, with a strong one up to {peak:.0f}"
    assert peak >= 2 * before, report

    cluster.kill_miner(1)
    left_at = await cluster.height(0)
    peak = max(peak, await cluster.difficulty(0))  # it may have pushed once more
    limit = next_boundary(left_at) + 2 * R
    now, height = peak, left_at
    while now > peak / 2:
        assert height < limit, f"{report}; after it left still {now:.0f} at block {height}"
        block = await cluster.wait_height(0, height + 1, timeout=60)
        height, now = block.height, difficulty(block)
    print(f"{report}, after it left {now:.0f} (block {height}, left at {left_at})")
