"""Protobuf wire messages convert to ledger values and back, and malformed ones are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualchain.chain import wire
from dualchain.chain.errors import DecodeError
from dualchain.chain.types import Block, QuorumCertificate, TxKind, Vote, VoteStep
from dualchain.chain.validation import build_block, sign_transaction
from dualchain.proto.v1 import ledger_pb2 as pb
from tests.conftest import CHAIN_ID


@pytest.fixture(scope="module")
def block(alice, bob) -> Block:
    genesis = build_block(alice, None, (), CHAIN_ID, 1000)
    qc = QuorumCertificate(CHAIN_ID, 0, 0, VoteStep.PRECOMMIT, genesis.hash,
                           ((alice.id, b"sig-a"), (bob.id, b"sig-b")) if alice.id < bob.id
                           else ((bob.id, b"sig-b"), (alice.id, b"sig-a")))
    txs = tuple(sign_transaction(bob, CHAIN_ID, TxKind.MEMO, b"m%d" % i, i, 1000) for i in range(3))
    return build_block(alice, genesis.header, txs, CHAIN_ID, 2000, parent_qc=qc, view=3)


def test_blocks_survive_the_wire_with_their_hashes(block: Block) -> None:
    data = wire.block_to_proto(block).SerializeToString()
    back = wire.decode_block(data)
    assert back == block
    assert back.hash == block.hash
    assert [t.hash for t in back.transactions] == [t.hash for t in block.transactions]


def test_votes_and_transactions_round_trip(block: Block) -> None:
    tx = block.transactions[0]
    assert wire.decode_transaction(wire.tx_to_proto(tx).SerializeToString()) == tx
    vote = Vote(CHAIN_ID, 1, 0, VoteStep.PREVOTE, block.hash, tx.sender, b"s")
    assert wire.decode_vote(wire.vote_to_proto(vote).SerializeToString()) == vote


def test_field_order_on_the_wire_does_not_change_the_hash(block: Block) -> None:
    # Re-serialise the fields in reverse order by hand: protobuf accepts any order.
    msg = wire.tx_to_proto(block.transactions[0])
    reordered = b"".join(
        pb.Transaction(**{field.name: value}).SerializeToString()
        for field, value in reversed(msg.ListFields())
    )
    assert reordered != msg.SerializeToString()
    assert wire.decode_transaction(reordered).hash == block.transactions[0].hash


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: setattr(m, "sender", b"short"), "sender must be 32 bytes"),
        (lambda m: setattr(m, "kind", 999), "unknown transaction kind"),
        (lambda m: setattr(m, "signature", b"x" * 9000), "above the limit"),
        (lambda m: setattr(m, "chain_id", "c" * 65), "chain_id"),
    ],
)
def test_malformed_transactions_are_refused(block: Block, mutate, message: str) -> None:
    msg = wire.tx_to_proto(block.transactions[0])
    mutate(msg)
    with pytest.raises(DecodeError, match=message):
        wire.decode_transaction(msg.SerializeToString())


def test_malformed_blocks_are_refused(block: Block) -> None:
    with pytest.raises(DecodeError, match="no header"):
        wire.decode_block(pb.Block().SerializeToString())
    msg = wire.block_to_proto(block)
    msg.header.parent_qc.signatures.reverse()
    with pytest.raises(DecodeError, match="sorted"):
        wire.decode_block(msg.SerializeToString())
    msg = wire.block_to_proto(replace(block, header=replace(block.header, parent_qc=None)))
    msg.header.parent_hash = b""
    with pytest.raises(DecodeError, match="parent_hash"):
        wire.decode_block(msg.SerializeToString())
    with pytest.raises(DecodeError, match="malformed Block"):
        wire.decode_block(b"\xff\xff\xff")
