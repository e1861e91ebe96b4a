"""Compact proposals: the canonical encoding, and a replica completing one in process.

A CTBC leader sends its proposal with the block's transactions by hash; a replica rebuilds the
block from its mempool and asks the sender for the transactions it lacks. The peer here is a
stand-in link whose GetBlockTransactions serves from a dict (the RPC itself is covered by the
integration tests of real daemons)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from dualchain.apps.factory import ctbc_app
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.ctbc import CtbcNode
from dualchain.chain.errors import DecodeError
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Domain, Signer, load_key_file
from dualchain.chain.proposals import CompactProposal, Proposal
from dualchain.chain.types import Transaction, TxKind
from dualchain.chain.validation import build_block, sign_transaction
from dualchain.deploy.testnet import TestnetPlan as Plan
from dualchain.deploy.testnet import make_testnet
from dualchain.proto.v1 import peer_pb2 as peer_pb

PEER = "127.0.0.1:7001"


class ServingLink:
    """A peer link stand-in: answers GetBlockTransactions from ``txs`` and records the asks."""

    address = PEER
    channel = object()

    def __init__(self, txs: list[Transaction]) -> None:
        self.txs = {tx.hash: tx for tx in txs}
        self.asked: list[list[bytes]] = []

    def stub(self) -> ServingLink:
        return self

    async def GetBlockTransactions(self, request, timeout):
        self.asked.append(list(request.tx_hashes))
        return peer_pb.TxBatch(txs=[self.txs[h].encoded for h in request.tx_hashes
                                    if h in self.txs])

    async def close(self) -> None:
        pass


def proposal_of(directory: Path, genesis: Genesis, txs: list[Transaction]) -> Proposal:
    """Height 1, round 0, signed by that view's leader."""
    leader_id = genesis.validators[(1 + 0) % len(genesis.validators)].id
    index = next(i for i, v in enumerate(genesis.validators) if v.id == leader_id)
    leader = load_key_file(directory / "keys" / f"node-{index}.key")
    block = build_block(leader, genesis.genesis_block().header, txs, genesis.chain_id,
                        time.time_ns() // 1_000_000, view=0)
    unsigned = Proposal(genesis.chain_id, 1, 0, -1, block, leader.id)
    return replace(unsigned, signature=leader.sign(Domain.PROPOSAL, unsigned.signing_bytes))


@pytest.fixture
def testnet(tmp_path: Path) -> tuple[Path, Genesis, list[Transaction]]:
    make_testnet(tmp_path, Plan(nodes=4))
    genesis = Genesis.load(tmp_path / "genesis.json")
    client = Signer.generate(genesis.algorithm)
    now = time.time_ns() // 1_000_000
    txs = [sign_transaction(client, genesis.chain_id, TxKind.MEMO, b"m%d" % n, n, now)
           for n in range(3)]
    return tmp_path, genesis, txs


def test_a_compact_proposal_round_trips_and_names_its_block(testnet) -> None:
    directory, genesis, txs = testnet
    proposal = proposal_of(directory, genesis, txs)
    compact = CompactProposal.decode(CompactProposal.of(proposal).encoded)
    assert compact.signed == proposal.signed_part
    assert compact.hashes == tuple(tx.hash for tx in txs)
    assert compact.proposal(txs) == proposal
    assert CompactProposal.peek(compact.encoded) == proposal.signed_part
    forged = replace(CompactProposal.of(proposal),
                     signed=replace(proposal.signed_part, block_hash=b"\x01" * 32))
    with pytest.raises(DecodeError, match="header does not match"):
        CompactProposal.decode(forged.encoded)
    with pytest.raises(DecodeError, match="trailing"):
        CompactProposal.decode(compact.encoded + b"\x00")


async def test_a_replica_fetches_only_the_transactions_it_lacks(testnet) -> None:
    directory, genesis, txs = testnet
    node = CtbcNode(DaemonConfig.load(directory / "node-0.json"), genesis,
                    load_key_file(directory / "keys" / "node-0.key"), ctbc_app)
    try:
        await node.load_nonces([txs[0].sender])
        node.mempool.add(txs[0], 0, time.time_ns() // 1_000_000)  # gossip brought this one
        link = ServingLink(txs)
        node.links = [link]  # type: ignore[list-item]
        node.engine.start_height(1, node.committee(1), None)
        proposal = proposal_of(directory, genesis, txs)

        await node.on_peer_compact_proposal(CompactProposal.of(proposal).encoded, PEER)
        await node._tasks[-1]  # the completion runs beside the gossip stream

        assert link.asked == [[txs[1].hash, txs[2].hash]]
        kind, completed = node._events.get_nowait()
        assert kind == "proposal" and completed == proposal
        assert completed.block.hash == proposal.block.hash
        # A copy already seen is dropped before anything is decoded or fetched.
        await node.on_peer_compact_proposal(CompactProposal.of(proposal).encoded, PEER)
        assert node._events.empty() and len(link.asked) == 1
    finally:
        await node.stop()
