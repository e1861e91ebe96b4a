"""Misbehaviour on a CTBC replica: equivocations the engine saw and refusals the application
takes as proof become EVIDENCE transactions; a byzantine strategy
(``dualchain.adversary.replica``) makes this replica equivocate itself. Part of ``CtbcNode``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dualchain.chain.consensus.committee import Equivocation
from dualchain.chain.consensus.guard import PROPOSAL_STEP
from dualchain.chain.daemon.base import TxOutcome, now_ms
from dualchain.chain.identity import Domain
from dualchain.chain.proposals import Proposal
from dualchain.chain.types import Transaction, TxKind, Vote
from dualchain.chain.validation import sign_transaction
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)



class EvidenceDuties:
    """Part of ``CtbcNode``: evidence it files, equivocation it commits when byzantine."""

    # -- equivocation evidence -------------------------------------------------------------------

    async def _report(self, action: Equivocation) -> None:
        self.metrics.equivocations.inc()
        first, second = action.first, action.second
        step = int(first.step) if isinstance(first, Vote) else PROPOSAL_STEP
        key = (action.offender, first.height, first.round, step)
        if key in self._reported:
            return
        self._reported.add(key)
        tx, outcome = await self._submit_evidence(self.app.equivocation_evidence(first, second))
        log.warning("equivocation by %s at %d/%d: evidence %s (%s)", action.offender.hex()[:16],
                    first.height, first.round, tx.hash.hex()[:16],
                    outcome.error.reason if outcome.error else "admitted")

    async def _submit_evidence(self, payload: bytes) -> tuple[Transaction, TxOutcome]:
        await self.load_nonces([self.signer.id])
        nonce, _ = self.mempool.admission_window(self.signer.id, self.next_nonce(self.signer.id))
        tx = sign_transaction(self.signer, self.chain_id, TxKind.EVIDENCE, payload, nonce,
                              now_ms())
        return tx, (await self.submit([tx]))[0]

    # -- model versions (FL) ---------------------------------------------------------------------

    async def submit(self, txs: Sequence[Transaction], gossip: bool = True) -> list[TxOutcome]:
        """Admission, after fetching the blobs a transaction reads (a model commit's) and the
        application's precheck; a refusal the application takes as proof of misbehaviour (a
        model that is not the aggregate of its updates) becomes evidence against the signer."""
        if self.blobs is not None:
            reads = [(tx, self.app.blobs_for(tx)) for tx in txs]
            await self.fetch_blobs([h for _, hashes in reads for h in hashes])
            for tx, hashes in reads:  # e.g. an aggregate's re-execution, off the event loop
                if hashes:
                    await self._on_cpu(self.app.precheck, tx)
        outcomes = await super().submit(txs, gossip)
        for tx, outcome in zip(txs, outcomes, strict=True):
            evidence = (self.app.refusal_evidence(tx, outcome.error)
                        if outcome.error is not None else None)
            if evidence is not None:
                assert outcome.error is not None
                ev_tx, ev_outcome = await self._submit_evidence(evidence)
                log.warning("evidence against %s: %s; evidence %s (%s)",
                            tx.sender.hex()[:16], outcome.error.reason, ev_tx.hash.hex()[:16],
                            ev_outcome.error.reason if ev_outcome.error else "admitted")
        return outcomes

    def _equivocate_vote(self, vote: Vote, twin_hash: bytes) -> None:
        """A byzantine strategy's: also vote for another block, signed, to every peer."""
        twin = Vote(vote.chain_id, vote.height, vote.round, vote.step, twin_hash, vote.voter)
        twin = Vote(twin.chain_id, twin.height, twin.round, twin.step, twin.block_hash,
                    twin.voter, self.signer.sign(Domain.VOTE, twin.signing_bytes))
        self.broadcast(peer_pb.PeerMessage(vote=twin.encoded))

    async def _equivocate_proposal(self, proposal: Proposal) -> None:
        """A byzantine strategy's: half the peers get one block first, half another, both
        signed."""
        other_block = self._build_block(proposal.round, salt=b"x")
        other = Proposal(proposal.chain_id, proposal.height, proposal.round, proposal.valid_round,
                         other_block, proposal.proposer)
        other = Proposal(other.chain_id, other.height, other.round, other.valid_round,
                         other_block, other.proposer,
                         self.signer.sign(Domain.PROPOSAL, other.signing_bytes))
        for i, link in enumerate(self.links):
            first, second = (proposal, other) if i % 2 == 0 else (other, proposal)
            link.send(peer_pb.PeerMessage(proposal=first.encoded))
            link.send(peer_pb.PeerMessage(proposal=second.encoded))
