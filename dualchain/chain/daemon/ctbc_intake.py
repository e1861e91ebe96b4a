"""What a CTBC replica does with its peers' gossip: proposals (whole, or compact and completed
from the mempool and the sender), votes and collectors' vote bundles, each authenticated before it
is queued for the consensus loop (``CtbcNode``, which this class is a part of)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc

from dualchain.chain.errors import DecodeError, SignatureError, ValidationError
from dualchain.chain.identity import Domain
from dualchain.chain.proposals import CompactProposal, Proposal, SignedProposal
from dualchain.chain.types import Transaction, Vote, VoteStep
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)

# Consensus messages this many heights past the one being decided are kept for later (the
# engine buffers the votes, we the proposals): a replica that commits a height a moment after
# its peers then still has their messages for the next one, instead of falling a height behind
# for good and catching up only by block sync.
LOOKAHEAD = 1


class PeerIntake:
    """Part of ``CtbcNode``: the peers' consensus messages, checked and queued."""

    # -- peer messages ---------------------------------------------------------------------------

    async def on_peer_proposal(self, data: bytes, peer: str) -> None:
        """A proposal with its whole block (a byzantine leader's, or an older replica's)."""
        if self._first_copy(Proposal.peek(data)):
            await self._peer_event("proposal", Proposal.decode(data))

    async def on_peer_compact_proposal(self, data: bytes, peer: str) -> None:
        """A proposal whose transactions come by hash: rebuilt from the mempool, with what is
        missing asked of the sender (off the gossip stream, which must keep flowing)."""
        signed = CompactProposal.peek(data)
        if not self._first_copy(signed):
            return
        compact = CompactProposal.decode(data)
        txs = [self.mempool.get(h) for h in compact.hashes]
        if any(tx is None for tx in txs):
            self._tasks.append(asyncio.create_task(self._complete(compact, txs, peer)))
            return
        await self._peer_event("proposal", compact.proposal(txs))  # type: ignore[arg-type]

    def _first_copy(self, signed: SignedProposal) -> bool:
        """Whether a proposal is new, authentic and near enough to decide on.

        Proposals are re-sent while a height stalls. The signed part comes first in the
        encoding: it identifies the copy and proves who signed it, so duplicates and forgeries
        are dropped before the rest is decoded.
        """
        seen = (signed.height, signed.round, signed.block_hash, signed.signature)
        if seen in self._seen_proposals:
            return False
        if not self._authentic(signed.chain_id, signed.height, signed.proposer, Domain.PROPOSAL,
                               signed.signing_bytes, signed.signature):
            return False
        if signed.height > self.height + 1 + LOOKAHEAD:
            return False
        self._seen_proposals.add(seen)
        return True

    async def _complete(self, compact: CompactProposal, txs: list[Transaction | None],
                        peer: str) -> None:
        """Fetches a compact proposal's missing transactions, from its sender first, round after
        round until its height is committed (a replica that just restarted may not have its
        links up yet; a proposal for the next height waits like a full one would). A proposal
        that cannot be completed is forgotten, so that a re-sent copy is tried again."""
        signed = compact.signed
        missing = [h for h, tx in zip(compact.hashes, txs, strict=True) if tx is None]
        found: dict[bytes, Transaction] = {}
        links = sorted(self.links, key=lambda link: link.address != peer)  # the sender first
        delay = 0.1
        while self.height < signed.height:
            for link in links:
                try:
                    reply = await link.stub().GetBlockTransactions(
                        peer_pb.GetBlockTransactionsRequest(
                            block_hash=signed.block_hash,
                            tx_hashes=[h for h in missing if h not in found]), timeout=5)
                    found.update((tx.hash, tx) for tx in map(Transaction.decode, reply.txs))
                except (grpc.aio.AioRpcError, DecodeError) as exc:
                    log.info("transactions of proposal %s not fetched from %s: %s",
                             signed.block_hash.hex()[:16], link.address, exc)
                    continue
                if all(h in found for h in missing):
                    full = [tx if tx is not None else found[h]
                            for h, tx in zip(compact.hashes, txs, strict=True)]
                    log.info("proposal %s at %d/%d: fetched %d missing transactions from %s",
                             signed.block_hash.hex()[:16], signed.height, signed.round,
                             len(missing), link.address)
                    await self._peer_event("proposal", compact.proposal(full))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._seen_proposals.discard(
            (signed.height, signed.round, signed.block_hash, signed.signature))

    def sent_block_transactions(self, block_hash: bytes) -> Mapping[bytes, Transaction]:
        """A block proposed in the height being decided, for a peer completing its compact
        proposal."""
        block = self.engine.block(block_hash)
        return {tx.hash: tx for tx in block.transactions} if block is not None else {}

    async def on_peer_vote(self, data: bytes, peer: str) -> None:
        vote = Vote.decode(data)
        if not self._authentic(vote.chain_id, vote.height, vote.voter, Domain.VOTE,
                               vote.signing_bytes, vote.signature):
            return
        if vote.height == self.height:
            if vote.step == VoteStep.PRECOMMIT:
                self._add_late_precommit(vote)
        elif vote.height <= self.height + 1 + LOOKAHEAD:
            await self._peer_event("vote", vote)

    def _authentic(self, chain_id: str, height: int, signer: bytes, domain: Domain,
                   signing_bytes: bytes, signature: bytes) -> bool:
        """Checks a consensus message's signer and signature; False for old heights.

        Raises for a message that is forged or comes from outside the committee. A message for a
        height beyond the committees we know is checked against the signer's validator key; once
        it verifies, it tells us that this validator has committed up to height - 1, which is
        what block sync acts on (a claim in an unsigned hello would not be evidence of anything).
        The signature is checked right here: the CPU threads may be busy validating a block, and
        a consensus message must not queue behind that.
        """
        if chain_id != self.chain_id:
            raise ValidationError(f"consensus message for chain {chain_id!r}",
                                  code="wrong_chain")
        if height < self.height:
            return False
        try:
            key = self.committee(height).keys.get(signer)
        except ValidationError:  # beyond the committees we know: any validator's key
            validator = self.app.validator(signer)
            key = validator.public_key if validator is not None else None
        if key is None:
            raise ValidationError("consensus message from a non-member", code="not_a_member")
        if not self.verifier.verify(self.params.algorithm, key, domain, signing_bytes,
                                    signature):
            raise SignatureError(f"{domain.name.lower()} signature does not verify")
        validator = self.app.validator(signer)
        if validator is not None and height - 1 > self.peer_heights.get(validator.address, -1):
            self.peer_heights[validator.address] = height - 1
        return True

    async def on_peer_message(self, message: peer_pb.PeerMessage, peer: str) -> None:
        kind = message.WhichOneof("kind")
        if kind == "compact_proposal":
            await self.on_peer_compact_proposal(message.compact_proposal, peer)
        elif kind == "proposal":
            await self.on_peer_proposal(message.proposal, peer)
        elif kind == "vote":
            await self.on_peer_vote(message.vote, peer)
        elif kind == "votes":  # a collector's bundle: each vote checked as if sent alone
            for vote in message.votes.votes:
                await self.on_peer_vote(vote, peer)
        else:
            raise DecodeError(f"unexpected gossip message {kind!r} on CTBC")
