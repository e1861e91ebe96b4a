"""Admission and the consensus event queue of a CTBC replica, in process.

The consensus event queue is bounded for what peers send: a peer whose
proposals and votes arrive faster than the consensus loop takes them waits (back-pressure on
its gossip stream), while the replica's own events (timeouts) still get in. In process, with
real signed votes of the testnet's validators; the consensus loop is not started, so nothing
is taken off the queue. A transaction whose nonce is past its sender's window is refused before
its signature costs a check."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dualchain.apps.factory import ctbc_app
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.ctbc import MAX_QUEUED_PEER_EVENTS, CtbcNode
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Domain, Signer, load_key_file
from dualchain.chain.types import TxKind, Vote, VoteStep
from dualchain.chain.validation import sign_transaction
from dualchain.deploy.testnet import TestnetPlan as Plan
from dualchain.deploy.testnet import make_testnet


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    make_testnet(tmp_path, Plan(nodes=4))
    return tmp_path


async def test_peer_events_beyond_the_bound_wait_and_own_events_do_not(directory) -> None:
    genesis = Genesis.load(directory / "genesis.json")
    node = CtbcNode(DaemonConfig.load(directory / "node-0.json"), genesis,
                    load_key_file(directory / "keys" / "node-0.key"), ctbc_app)
    voter = load_key_file(directory / "keys" / "node-1.key")
    try:
        unsigned = Vote(genesis.chain_id, 1, 0, VoteStep.PREVOTE, b"\x01" * 32, voter.id)
        vote = replace(unsigned, signature=voter.sign(Domain.VOTE, unsigned.signing_bytes))
        for _ in range(MAX_QUEUED_PEER_EVENTS):
            await asyncio.wait_for(node.on_peer_vote(vote.encoded, "peer"), 5)
        assert node._events.qsize() == MAX_QUEUED_PEER_EVENTS

        blocked = asyncio.create_task(node.on_peer_vote(vote.encoded, "peer"))
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done  # waits for room: the queue did not grow
        assert node._events.qsize() == MAX_QUEUED_PEER_EVENTS
        node._events.put_nowait(("timeout", 1, 0, 0))  # our own timer is never held back
        assert node._events.qsize() == MAX_QUEUED_PEER_EVENTS + 1

        # The consensus loop takes one peer event: the waiting vote gets its place.
        node._events.get_nowait()
        node._peer_slots.release()
        await asyncio.wait_for(blocked, 5)
        assert node._events.qsize() == MAX_QUEUED_PEER_EVENTS + 1
    finally:
        await node.stop()


async def test_a_nonce_past_the_window_is_refused_before_its_signature_is_checked(
        directory) -> None:
    genesis = Genesis.load(directory / "genesis.json")
    node = CtbcNode(DaemonConfig.load(directory / "node-0.json"), genesis,
                    load_key_file(directory / "keys" / "node-0.key"), ctbc_app)
    sender = Signer.generate(genesis.algorithm)
    now = time.time_ns() // 1_000_000
    try:
        far = sign_transaction(sender, genesis.chain_id, TxKind.MEMO, b"far",
                               node.mempool.config.max_nonce_gap + 1, now)
        outcome, = await node.submit([far], gossip=False)
        assert outcome.error is not None and outcome.error.code == "nonce_gap"
        assert node.verifier.checked == 0  # no signature check spent on it
        near = sign_transaction(sender, genesis.chain_id, TxKind.MEMO, b"near", 0, now)
        outcome, = await node.submit([near], gossip=False)
        assert outcome.error is None and node.verifier.checked == 1
    finally:
        await node.stop()
