"""A record the CMBC state refuses no longer blocks its sender, with real processes: two daemons
(a miner on the first only) and two senders, each with an outbox on its own daemon.

Both senders anchor version 1 with different hashes. Each anchor is fine alone, so both are
admitted; the chain takes one and refuses the other for good. Each sender then submits two more
records behind its anchor. The losing sender's daemon (with a miner or without) drops its
anchor and the records behind it; its outbox reads why (GetTxStatus) and signs the two records
again from its committed nonce, and they are mined. Before, they waited behind the refused
anchor for good (tests/unit/chain/daemon/test_cmbc_stuck.py reproduces that in process).
"""

from __future__ import annotations

import pytest

from dualchain.apps.cmbc.payloads import Anchor
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.outbox import Outbox, Refused
from dualchain.chain.types import TxKind
from tests.integration.cluster import make_senders
from tests.integration.cmbc_cluster import CmbcCluster, hash_rate

INTERVAL_MS = 500
DEADLINE_S = 90.0


@pytest.mark.timeout(180)
async def test_the_loser_of_two_conflicting_anchors_resumes(make_cmbc_cluster) -> None:
    duty = 0.3
    pow_params = PowParams(
        initial_difficulty=max(1, int(hash_rate() * duty * INTERVAL_MS / 1000)),
        block_interval_ms=INTERVAL_MS, retarget_interval=10_000, finality_depth=3)
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=2, miners=1, pow=pow_params)
    senders = make_senders(2)
    outboxes = [Outbox(cluster.chain(i), signer, cluster.chain_id)
                for i, signer in enumerate(senders)]
    anchors = [await box.submit(TxKind.ANCHOR, Anchor(1, bytes([i + 1]) * 32, 7).encode())
               for i, box in enumerate(outboxes)]
    for i, box in enumerate(outboxes):
        for n in range(2):
            await box.submit(TxKind.MEMO, b"after-anchor-%d-%d" % (i, n))
    await cluster.start_miner(0, node=0, duty=duty)

    # Each new block: ask both outboxes; the loser's learns of its refusal.
    refused: list[tuple[int, Refused]] = []
    height = 1
    while not refused:
        await cluster.wait_height(0, height, timeout=DEADLINE_S)
        for i, box in enumerate(outboxes):
            refused += [(i, r) for r in await box.follow_up()]
        height += 1
    ((loser, why),) = refused
    winner = 1 - loser
    assert why.tx_hash == anchors[loser] and why.code == "conflicting_anchor"
    assert "already anchored with another hash" in why.reason

    # Every memo of both senders ends up on the chain, once: the loser's signed again.
    memos = {b"after-anchor-%d-%d" % (i, n) for i in range(2) for n in range(2)}
    found: dict[bytes, int] = {}
    anchored = []
    height = 1
    while set(found) != memos:
        block = await cluster.wait_height(1, height, timeout=DEADLINE_S)
        for tx in block.transactions:
            if tx.kind == TxKind.MEMO:
                assert tx.payload not in found, "a record was mined twice"
                found[tx.payload] = block.height
        anchored += [tx.hash for tx in block.transactions if tx.kind == TxKind.ANCHOR]
        for box in outboxes:
            assert await box.follow_up() == []
        height += 1
    assert anchored == [anchors[winner]]
    print(f"sender {loser}'s anchor refused ({why.code}); memos mined at heights "
          f"{sorted(found.values())}")
