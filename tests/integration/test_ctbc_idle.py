"""An idle CTBC chain (no empty blocks) makes no blocks and no view changes, and a transaction
sent to any replica wakes it: the leader proposes, the height commits in round 0."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.integration.cluster import FAST, make_senders, sign_memos

QUIET = replace(FAST, empty_blocks_interval_ms=0)
# Longer than a whole round's timeouts (1 + 0.4 + 0.4 s): a timer that ran while idle would
# show as a view change or a block within it.
IDLE_WINDOW_S = 4.0
COMMIT_DEADLINE_S = 20.0


async def views(cluster) -> list[int]:
    return [(await cluster.status(i)).view for i in range(cluster.nodes)]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_an_idle_chain_stays_quiet_and_a_transaction_wakes_it(make_cluster) -> None:
    cluster = make_cluster(nodes=4, consensus=QUIET)
    assert await cluster.no_block_within(0, 0, IDLE_WINDOW_S) is None
    assert await views(cluster) == [0, 0, 0, 0]

    txs = [tx for sender in sign_memos(make_senders(2), 1, cluster.chain_id) for tx in sender]
    for n, tx in enumerate(txs):  # each to a replica that does not lead the height
        status = await cluster.status(0)
        target = (cluster.index_of(status.leader) + 1 + n) % cluster.nodes
        await cluster.submit_one(target, tx)
        found = await cluster.wait_txs(0, {tx.hash}, COMMIT_DEADLINE_S)
        height = found[tx.hash]
        assert height == n + 1  # no empty block before it
        assert (await cluster.block(0, height)).header.view == 0  # decided in round 0
        # Quiet again once nothing is pending, on every replica, with no view change.
        assert await cluster.no_block_within(0, height, IDLE_WINDOW_S) is None
        await cluster.wait_all(range(cluster.nodes), height, timeout=10)
        assert await views(cluster) == [0, 0, 0, 0]
