"""CMBC daemons facing bad blocks and crashes, as real processes.

- Blocks crafted by hand from real templates (MinerService.GetBlockTemplate, then what a miner
  does): invalid proof of work, a target the retarget rule does not give, a timestamp not above
  the median of the last 11 or too far ahead, another chain's id, a header signed by someone
  else. Each is refused with a gRPC status whose details name the reason, changes nothing, and
  the daemon keeps serving.
- A block whose parent is unknown, sent over a peer Gossip stream, is parked, and connected as
  soon as its parent arrives.
- A SIGKILLed daemon restarted with the same config reloads its block store and syncs to the
  others.
"""

from __future__ import annotations

import time

import grpc
import pytest

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.chain.consensus.pow import MAX_TARGET, PowParams, median_time_past, target_to_bytes
from dualchain.chain.identity import Signer
from dualchain.chain.types import Transaction
from dualchain.proto.v1 import miner_pb2 as miner_pb
from tests.integration.cluster import make_senders, sign_memos
from tests.integration.cmbc_cluster import (
    CmbcCluster,
    block_from_template,
    block_on,
    solve_template,
)

# Easy work (about 4000 hashes a block: a few ms in Python) and no retarget within the test, so
# the blocks the test mines itself keep the initial target.
HAND_MINED = PowParams(initial_difficulty=4096, block_interval_ms=500, retarget_interval=1000,
                       finality_depth=6, median_window=11)
# One miner with half a core on a 0.5 s target.
RESTART = PowParams(initial_difficulty=60_000, block_interval_ms=500, retarget_interval=5,
                    finality_depth=6, median_window=11)


async def mine_by_hand(cluster: CmbcCluster, signer: Signer, count: int) -> None:
    for _ in range(count):
        template = await cluster.template(0, signer)
        header, reward = solve_template(template, signer)
        reply = await cluster.submit_block(0, template, header, reward)
        assert reply.outcome == "connected", reply


async def refused(call, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value
    assert info.value.details().startswith(f"{reason}:"), info.value.details()
    return info.value.details()


async def test_bad_blocks_are_refused_with_a_reason(make_cmbc_cluster) -> None:
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=1, miners=2, pow=HAND_MINED)
    miner, other = cluster.miner_signers
    await mine_by_hand(cluster, miner, 12)
    before = await cluster.status(0)
    assert before.height == 12
    INVALID = grpc.StatusCode.INVALID_ARGUMENT

    template = await cluster.template(0, miner)
    submit = cluster.submit_block

    # Proof of work above the target, or a target easier than the retarget rule gives.
    await refused(submit(0, template, *solve_template(template, miner, valid_pow=False)),
                  INVALID, "bad_pow")
    await refused(submit(0, template, *solve_template(
        template, miner, pow_target=target_to_bytes(MAX_TARGET))), INVALID, "bad_target")

    # A timestamp at the median of the last 11 blocks, or far below it, or too far ahead.
    blocks = await cluster.blocks(0, before.height - 10, before.height)
    mtp = median_time_past([b.header.timestamp_ms for b in blocks])
    for timestamp in (mtp, mtp - 60_000):
        await refused(submit(0, template, *solve_template(template, miner,
                                                          timestamp_ms=timestamp)),
                      INVALID, "bad_timestamp")
    drift = cluster.genesis.limits.max_future_drift_ms
    ahead = time.time_ns() // 1_000_000 + drift + 60_000
    await refused(submit(0, template, *solve_template(template, miner, timestamp_ms=ahead)),
                  INVALID, "future_timestamp")

    # Another chain's block, through the miner service and through the peer gossip stream.
    await refused(submit(0, template, *solve_template(template, miner, chain_id="other-chain")),
                  INVALID, "wrong_chain")
    await refused(cluster.gossip(0, [block_from_template(template, miner,
                                                         chain_id="other-chain")]),
                  INVALID, "wrong_chain")
    # Invalid proof of work over gossip ends that peer's stream with the reason.
    await refused(cluster.gossip(0, [block_from_template(template, miner, valid_pow=False)]),
                  INVALID, "bad_pow")

    # A header signed by a key other than the miner's (its reward names the miner).
    await refused(submit(0, template, *solve_template(template, miner, signed_by=other)),
                  grpc.StatusCode.UNAUTHENTICATED, "bad_signature")

    # A template the daemon never issued, and bytes that are no header.
    header, reward = solve_template(template, miner)
    stranger = miner_pb.BlockTemplate()
    stranger.CopyFrom(template)
    stranger.template_id = b"\x00" * 16
    await refused(submit(0, stranger, header, reward), grpc.StatusCode.NOT_FOUND, "not_found")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cluster.miner_service(0).SubmitBlock(miner_pb.SubmitBlockRequest(
            template_id=template.template_id, header=b"junk", reward_tx=reward.encoded),
            timeout=10)
    assert info.value.code() == INVALID

    # Nothing changed, the daemon still serves, and the good solution of that same template
    # is accepted (once: a second time it is a duplicate).
    after = await cluster.status(0)
    assert (after.height, after.head_hash) == (before.height, before.head_hash)
    assert cluster.alive(0)
    reply = await submit(0, template, header, reward)
    assert (reply.outcome, reply.height) == ("connected", before.height + 1)
    assert (await submit(0, template, header, reward)).outcome == "duplicate"


async def test_unknown_parent_is_parked_then_connected(make_cmbc_cluster) -> None:
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=1, miners=1, pow=HAND_MINED)
    (miner,) = cluster.miner_signers
    await mine_by_hand(cluster, miner, 3)
    before = await cluster.status(0)

    # Parent P from a real template (not submitted), child C built on it by hand, grandchild
    # G on C. Each holds only its reward; the state after each (the miner credited its block
    # reward) is replayed here from the node's chain.
    template = await cluster.template(0, miner)
    parent = block_from_template(template, miner)
    nonce = Transaction.decode(template.reward_tx).nonce
    replica = CmbcApp(block_reward=HAND_MINED.block_reward)
    for block in [*await cluster.blocks(0, 1, before.height), parent]:
        replica.apply_block(block)
    child = block_on(parent.header, miner, nonce + 1, replica.app_hash())
    replica.apply_block(child)
    grandchild = block_on(child.header, miner, nonce + 2, replica.app_hash())

    # The descendants arrive first (the grandchild before the child): both parked.
    summary = await cluster.gossip(0, [grandchild, child])
    assert summary.received == 3  # hello and two blocks, none refused
    parked = await cluster.status(0)
    assert (parked.height, parked.head_hash) == (before.height, before.head_hash)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cluster.block(0, child.height)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # The parent arrives: it and the whole parked branch connect.
    await cluster.gossip(0, [parent])
    status = await cluster.status(0)
    assert (status.height, bytes(status.head_hash)) == (grandchild.height, grandchild.hash)
    chain = await cluster.blocks(0, parent.height, grandchild.height)
    assert [b.hash for b in chain] == [parent.hash, child.hash, grandchild.hash]

    # Announcing them again changes nothing (known blocks are dropped quietly).
    assert (await cluster.gossip(0, [parent, child, grandchild])).received == 4
    assert bytes((await cluster.status(0)).head_hash) == grandchild.hash


async def test_restarted_daemon_reloads_its_store_and_syncs(make_cmbc_cluster) -> None:
    cluster: CmbcCluster = await make_cmbc_cluster(nodes=3, miners=1, pow=RESTART)
    await cluster.start_miner(0, node=0, duty=0.5)
    await cluster.wait_height(2, 5, timeout=30)
    stored = (await cluster.status(2)).height
    cluster.kill(2)

    # The others go on; transactions sent meanwhile get mined without the dead daemon.
    (txs,) = sign_memos(make_senders(1), 3, cluster.chain_id, tag=b"while-down")
    await cluster.submit(1, txs)
    down_at = (await cluster.status(0)).height
    await cluster.wait_txs(1, [tx.hash for tx in txs], timeout=30, from_height=down_at)
    await cluster.wait_height(0, down_at + 3, timeout=30)

    ready = await cluster.astart(2)
    assert ready["height"] >= stored, "the restarted daemon lost blocks it had stored"
    target = (await cluster.status(0)).height
    assert target > ready["height"], "nothing to sync: the test proves nothing"
    await cluster.wait_height(2, target, timeout=30)
    found = await cluster.wait_txs(2, [tx.hash for tx in txs], timeout=10)
    assert len(found) == len(txs)
    cluster.kill_miner(0)
    # One miner: no competing branches, so every daemon holds the same blocks up to there.
    chains = [await cluster.canonical_hashes(i, 1, target) for i in range(3)]
    assert chains[0] == chains[1] == chains[2]
