"""Four CTBC replicas, each a real daemon process on loopback, commit a stream of transactions."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.integration.cluster import (
    assert_certified,
    assert_same_chain,
    make_senders,
    sign_memos,
)

SENDERS = 6
PER_SENDER = 50  # 300 transactions
BATCH = 25
COMMIT_DEADLINE_S = 60.0


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_four_replicas_commit_every_tx_exactly_once_on_one_chain(make_cluster) -> None:
    cluster = make_cluster(nodes=4)
    per_sender = sign_memos(make_senders(SENDERS), PER_SENDER, cluster.chain_id)
    txs = [tx for sender_txs in per_sender for tx in sender_txs]
    wanted = {tx.hash for tx in txs}
    assert len(wanted) == SENDERS * PER_SENDER

    # Each sender's transactions go out in nonce order, batch after batch, every batch to the
    # next replica in turn: later nonces of a sender often reach a replica that has not seen the
    # earlier ones yet (they arrive by gossip).
    batches = [
        sender_txs[k : k + BATCH] for k in range(0, PER_SENDER, BATCH)
        for sender_txs in per_sender
    ]
    started = time.monotonic()
    for n, batch in enumerate(batches):
        reply = await cluster.submit(n % cluster.nodes, batch)
        refused = [(r.code, r.reason) for r in reply.results if not r.accepted]
        assert not refused, f"batch {n} to node {n % cluster.nodes}: {refused[:3]}"

    # Follow node 0's committed blocks until every transaction is in one.
    found = await cluster.wait_txs(0, wanted, COMMIT_DEADLINE_S)
    elapsed = time.monotonic() - started
    height = max(found.values())

    # Every replica reaches that height; all hold the same chain up to it.
    await cluster.wait_all(range(cluster.nodes), height, timeout=20)
    blocks = await assert_same_chain(cluster, list(range(cluster.nodes)), height)
    counts = Counter(tx.hash for block in blocks for tx in block.transactions)
    assert set(counts) == wanted, "blocks carry transactions nobody submitted"
    duplicated = {h.hex()[:16]: c for h, c in counts.items() if c != 1}
    assert not duplicated, f"transactions committed more than once: {duplicated}"
    # Per sender, nonces are committed in order with no gaps.
    order: dict[bytes, list[int]] = {}
    for block in blocks:
        for tx in block.transactions:
            order.setdefault(tx.sender, []).append(tx.nonce)
    assert all(nonces == list(range(PER_SENDER)) for nonces in order.values())
    assert_certified(cluster, blocks)

    statuses = await asyncio.gather(*(cluster.status(i) for i in range(cluster.nodes)))
    assert all(s.mempool_size == 0 for s in statuses), [s.mempool_size for s in statuses]
    print(f"300 txs committed in {elapsed:.1f} s, {height} blocks")
