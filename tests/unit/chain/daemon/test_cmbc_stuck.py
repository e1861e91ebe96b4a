"""A CMBC record the chain state refuses at template time no longer blocks its sender: the
daemon drops it and its sender's later records with a reason (GetTxStatus), and the sender's
outbox signs the later ones again from its committed nonce. In process, on a real gRPC server;
blocks are mined from the daemon's own templates at a trivial difficulty."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from dualchain.apps.cmbc.payloads import Anchor
from dualchain.chain.daemon.cmbc import CmbcNode
from dualchain.chain.daemon.servicers import ChainServicer
from dualchain.chain.daemon.stuck import EVICT_AFTER_HEADS, FOLLOWS_CODE, StuckTxs
from dualchain.chain.errors import ValidationError
from dualchain.chain.mempool import Mempool
from dualchain.chain.outbox import Outbox
from dualchain.chain.rpc import channel_options, server_options
from dualchain.chain.types import TxKind
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from tests.unit.chain.daemon.test_cmbc_node import (
    CHAIN,
    CLIENT,
    MINER,
    SENDER,
    running_node,
    solve,
    tx,
)

FIRST = Anchor(1, b"\x01" * 32, 5).encode()
CONFLICTING = Anchor(1, b"\x02" * 32, 5).encode()  # the same version with another hash


@contextlib.asynccontextmanager
async def served(node: CmbcNode) -> AsyncIterator[chain_grpc.ChainServiceStub]:
    """The node's ChainService on a real loopback socket, and a stub to it."""
    server = grpc.aio.server(options=server_options())
    chain_grpc.add_ChainServiceServicer_to_server(ChainServicer(node), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options())
    try:
        yield chain_grpc.ChainServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


async def mine(node: CmbcNode) -> list[bytes]:
    """Mines one block from the node's template; returns its transaction hashes (no reward)."""
    template = await node.block_template(MINER.public_key, 0.0)
    outcome, block = await node.submit_solution(*solve(template, MINER))
    assert outcome == "connected"
    return [t.hash for t in block.transactions[1:]]


async def statuses(stub: chain_grpc.ChainServiceStub, hashes: list[bytes]
                   ) -> list[chain_pb.TxStatus]:
    reply = await stub.GetTxStatus(chain_pb.GetTxStatusRequest(tx_hashes=hashes), timeout=5)
    return list(reply.statuses)


async def test_a_refused_record_no_longer_blocks_its_senders_later_records(tmp_path) -> None:
    """The stall: CLIENT's anchor conflicts with SENDER's (admitted alone, refused together),
    so every template leaves it out with CLIENT's later records. Before the fix they stayed
    in the mempool for good, GetNonce counted them, and nothing CLIENT signed was ever mined."""
    async with running_node(tmp_path) as node, served(node) as stub:
        first = tx(SENDER, 0, TxKind.ANCHOR, FIRST)
        refused = tx(CLIENT, 0, TxKind.ANCHOR, CONFLICTING)
        later = [tx(CLIENT, 1, TxKind.MEMO, b"later-1"), tx(CLIENT, 2, TxKind.MEMO, b"later-2")]
        assert all(o.error is None for o in await node.submit([first, refused, *later]))
        assert await mine(node) == [first.hash]
        # Refused on fewer heads than the limit: still pending (a passing state may clear).
        for _ in range(EVICT_AFTER_HEADS - 2):
            assert await mine(node) == []
        assert [s.state for s in await statuses(stub, [refused.hash, later[0].hash])] == \
            [chain_pb.TX_STATE_PENDING] * 2
        assert await mine(node) == []  # the third head that refuses it
        assert node.mempool.pending(CLIENT.id) == []
        found = await statuses(stub, [refused.hash, *(t.hash for t in later), first.hash])
        assert [s.state for s in found] == [chain_pb.TX_STATE_DROPPED] * 3 + \
            [chain_pb.TX_STATE_COMMITTED]
        assert found[0].code == "conflicting_anchor"
        assert "already anchored with another hash" in found[0].reason
        assert [s.code for s in found[1:3]] == [FOLLOWS_CODE] * 2
        assert found[3].height == 1 and not found[3].final
        # The sender resumes from its committed nonce: what it signs now is mined.
        nonce = (await stub.GetNonce(chain_pb.GetNonceRequest(sender=CLIENT.id))).next_nonce
        assert nonce == 0
        resumed = tx(CLIENT, nonce, TxKind.MEMO, b"resumed")
        assert (await node.submit([resumed]))[0].error is None
        assert await mine(node) == [resumed.hash]
        assert node.metrics.registry.get_sample_value(
            "dualchain_chain_rejected_total", {"reason": "template_conflicting_anchor"}) == 1


async def test_the_outbox_signs_again_what_was_dropped_behind_a_refused_record(
        tmp_path) -> None:
    async with running_node(tmp_path) as node, served(node) as stub:
        outbox = Outbox(stub, CLIENT, CHAIN)
        assert (await node.submit([tx(SENDER, 0, TxKind.ANCHOR, FIRST)]))[0].error is None
        refused = await outbox.submit(TxKind.ANCHOR, CONFLICTING)
        later = [await outbox.submit(TxKind.MEMO, b"a"), await outbox.submit(TxKind.MEMO, b"b")]
        assert len(await mine(node)) == 1
        assert await outbox.follow_up() == []  # pending: nothing to do yet
        for _ in range(EVICT_AFTER_HEADS - 1):
            assert await mine(node) == []
        gone = await outbox.follow_up()
        assert [(r.tx_hash, r.kind, r.payload, r.code) for r in gone] == \
            [(refused, TxKind.ANCHOR, CONFLICTING, "conflicting_anchor")]
        # Both later records were signed again from nonce 0, in their order, and are mined.
        pending = node.mempool.pending(CLIENT.id)
        assert [(t.nonce, t.payload) for t in pending] == [(0, b"a"), (1, b"b")]
        assert not set(later) & {t.hash for t in pending}
        assert await mine(node) == [t.hash for t in pending]
        assert len(outbox) == 2  # followed until final
        assert await outbox.follow_up() == []


async def test_get_tx_status_refuses_malformed_requests(tmp_path) -> None:
    async with running_node(tmp_path) as node, served(node) as stub:
        for hashes in ([b"\x01" * 31], [b"\x01" * 32] * 257):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await statuses(stub, hashes)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "\n" not in caught.value.details()
        assert [s.state for s in await statuses(stub, [b"\x05" * 32])] == \
            [chain_pb.TX_STATE_UNKNOWN]


def test_refusals_count_once_per_head() -> None:
    mempool = Mempool()
    stuck = StuckTxs(mempool, evict_after_heads=2)
    refused, later = tx(CLIENT, 0), tx(CLIENT, 1)
    mempool.add(refused, 0, 0)
    mempool.add(later, 0, 0)
    why = [(refused, ValidationError("no", code="some_rule"))]
    for _ in range(5):  # many templates on one head
        assert stuck.observe(b"head-1", [], why) == []
    assert stuck.observe(b"head-2", [], why) == [refused, later]
    assert len(mempool) == 0
    assert stuck.dropped(refused.hash) == ("some_rule", "refused in block templates on 2 "
                                                        "heads: no")
    assert stuck.dropped(later.hash)[0] == FOLLOWS_CODE


def test_a_transaction_taken_again_starts_its_count_afresh() -> None:
    mempool = Mempool()
    stuck = StuckTxs(mempool, evict_after_heads=2)
    refused = tx(CLIENT, 0)
    mempool.add(refused, 0, 0)
    why = [(refused, ValidationError("no", code="some_rule"))]
    stuck.observe(b"head-1", [], why)
    stuck.observe(b"head-2", [refused], [])  # the state took it on that head
    assert stuck.observe(b"head-3", [], why) == []
    assert refused.hash in mempool


def test_drop_from_takes_a_senders_nonces_from_one_on() -> None:
    mempool = Mempool()
    txs = [tx(CLIENT, n) for n in range(4)]
    for t in txs:
        mempool.add(t, 0, 0)
    mempool.add(tx(SENDER, 0), 0, 0)
    assert mempool.drop_from(CLIENT.id, 2) == txs[2:]
    assert mempool.pending(CLIENT.id) == txs[:2]
    assert mempool.drop_from(CLIENT.id, 9) == [] and mempool.drop_from(b"\x00" * 32, 0) == []
    assert len(mempool) == 3


async def test_a_record_signed_again_replaces_one_templates_refuse(tmp_path) -> None:
    """Another daemon dropped CLIENT's refused anchor first and CLIENT signed its next record
    over that nonce: gossiped here, where the anchor is still pending (refused on fewer heads),
    it must take the anchor's place, or this daemon never gets it (gossip sends it once)."""
    async with running_node(tmp_path) as node, served(node) as stub:
        first = tx(SENDER, 0, TxKind.ANCHOR, FIRST)
        refused = tx(CLIENT, 0, TxKind.ANCHOR, CONFLICTING)
        behind = tx(CLIENT, 1, TxKind.MEMO, b"behind")
        assert all(o.error is None for o in await node.submit([first, refused, behind]))
        assert await mine(node) == [first.hash]  # refused on one head
        again = [tx(CLIENT, 0, TxKind.MEMO, b"again-0"), tx(CLIENT, 1, TxKind.MEMO, b"again-1")]
        assert all(o.error is None for o in await node.submit(again, gossip=False))
        assert node.mempool.pending(CLIENT.id) == again
        found = await statuses(stub, [refused.hash, behind.hash])
        assert [(s.state, s.code) for s in found] == [
            (chain_pb.TX_STATE_DROPPED, "conflicting_anchor"),
            (chain_pb.TX_STATE_DROPPED, FOLLOWS_CODE)]
        assert await mine(node) == [t.hash for t in again]
        # A pending transaction templates take keeps its nonce.
        kept = tx(SENDER, 1, TxKind.MEMO, b"kept")
        assert (await node.submit([kept]))[0].error is None
        other = tx(SENDER, 1, TxKind.MEMO, b"other")
        outcome = (await node.submit([other]))[0]
        assert outcome.error is not None and outcome.error.code == "nonce_taken"
