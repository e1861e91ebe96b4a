"""Consensus proposals of the committee chain: a leader's signed proposal of a block for one
height and round (``Proposal``), its signed part alone (``SignedProposal``: what evidence and
duplicate checks read), and its compact form (``CompactProposal``: the block's transactions by
hash, rebuilt from the receiver's mempool).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import DecodeError
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import (
    COMPACT_PROPOSAL_TAG,
    HASH_BYTES,
    MAX_BLOCK_ENCODED,
    MAX_CHAIN_ID,
    MAX_SIGNATURE,
    MAX_TXS_PER_BLOCK,
    MAX_VOTES,
    PROPOSAL_TAG,
    PROPOSAL_UNSIGNED_TAG,
    SIGNED_PROPOSAL_TAG,
    Block,
    BlockHeader,
    Transaction,
)


@dataclass(frozen=True)
class Proposal:
    """A committee leader's signed proposal of a block for one height and round.

    ``valid_round`` is the round in which the block last gathered 2f+1 prevotes (-1 if none): a
    leader re-proposing such a block says so, and replicas locked on an older round may accept it.
    The signature covers the block hash, so the block travels beside it.
    """

    chain_id: str
    height: int
    round: int
    valid_round: int
    block: Block
    proposer: bytes
    signature: bytes = b""

    @cached_property
    def signed_part(self) -> SignedProposal:
        """What the signature covers (the block by its hash) with the signature: small enough to
        travel alone, e.g. as equivocation evidence."""
        return SignedProposal(self.chain_id, self.height, self.round, self.valid_round,
                              self.block.hash, self.proposer, self.signature)

    @property
    def signing_bytes(self) -> bytes:
        return self.signed_part.signing_bytes

    @cached_property
    def encoded(self) -> bytes:
        signed = self.signed_part
        return signed._write_body(Writer(PROPOSAL_TAG)).var(self.signature).raw(
            self.block.encoded).bytes()

    @staticmethod
    def peek(data: bytes) -> SignedProposal:
        """The signed part of an encoded proposal, without decoding its block: enough to drop a
        copy already seen, or a forged one, before paying for the block."""
        return SignedProposal._read(Reader(data, PROPOSAL_TAG, "proposal"))

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        r = Reader(data, PROPOSAL_TAG, "proposal")
        signed = SignedProposal._read(r)
        block = Block.decode(r.raw("block", MAX_BLOCK_ENCODED))
        r.finish()
        if block.hash != signed.block_hash:
            raise DecodeError("proposal: block does not match the signed block hash")
        return cls(signed.chain_id, signed.height, signed.round, signed.valid_round, block,
                   signed.proposer, signed.signature)


@dataclass(frozen=True)
class SignedProposal:
    """The signed fields of a Proposal and its signature, naming the block by hash only."""

    chain_id: str
    height: int
    round: int
    valid_round: int
    block_hash: bytes
    proposer: bytes
    signature: bytes = b""

    def _write_body(self, w: Writer) -> Writer:
        return (
            w.text(self.chain_id)
            .u64(self.height)
            .u64(self.round)
            .u64(self.valid_round + 1)  # -1 (none) encodes as 0
            .fixed(self.block_hash, HASH_BYTES)
            .fixed(self.proposer, ID_BYTES)
        )

    @cached_property
    def signing_bytes(self) -> bytes:
        return self._write_body(Writer(PROPOSAL_UNSIGNED_TAG)).bytes()

    @cached_property
    def encoded(self) -> bytes:
        return self._write_body(Writer(SIGNED_PROPOSAL_TAG)).var(self.signature).bytes()

    @classmethod
    def decode(cls, data: bytes) -> SignedProposal:
        r = Reader(data, SIGNED_PROPOSAL_TAG, "signed proposal")
        value = cls._read(r)
        r.finish()
        return value

    @classmethod
    def _read(cls, r: Reader) -> SignedProposal:
        return cls(
            chain_id=r.text("chain_id", MAX_CHAIN_ID),
            height=r.u64("height"),
            round=r.u64("round"),
            valid_round=r.u64("valid_round") - 1,
            block_hash=r.fixed(HASH_BYTES, "block_hash"),
            proposer=r.fixed(ID_BYTES, "proposer"),
            signature=r.var("signature", MAX_SIGNATURE),
        )


@dataclass(frozen=True)
class CompactProposal:
    """A proposal as a CTBC leader sends it: the signed part, the block's header and its
    transactions by hash.

    The committee holds the transactions already (gossip), so a proposal of 2,000 transactions
    is 64 kB of hashes instead of 8 MB of transactions that every replica would decode again. A
    replica rebuilds the block from its mempool, asks the sender for what it lacks, and
    validates the rebuilt block in full: the header's Merkle root ties the hashes to it.
    """

    signed: SignedProposal
    header: BlockHeader
    hashes: tuple[bytes, ...]

    @classmethod
    def of(cls, proposal: Proposal) -> CompactProposal:
        return cls(proposal.signed_part, proposal.block.header,
                   tuple(tx.hash for tx in proposal.block.transactions))

    @cached_property
    def encoded(self) -> bytes:
        w = self.signed._write_body(Writer(COMPACT_PROPOSAL_TAG)).var(self.signed.signature)
        w.raw(self.header.encoded).count(len(self.hashes))
        for h in self.hashes:
            w.fixed(h, HASH_BYTES)
        return w.bytes()

    @staticmethod
    def peek(data: bytes) -> SignedProposal:
        """The signed part alone (see Proposal.peek)."""
        return SignedProposal._read(Reader(data, COMPACT_PROPOSAL_TAG, "compact proposal"))

    @classmethod
    def decode(cls, data: bytes) -> CompactProposal:
        r = Reader(data, COMPACT_PROPOSAL_TAG, "compact proposal")
        signed = SignedProposal._read(r)
        header = BlockHeader.decode(r.raw("header", MAX_VOTES * 9000 + 64 * 1024))
        n = r.count("hashes", MAX_TXS_PER_BLOCK)
        hashes = tuple(r.fixed(HASH_BYTES, "hash") for _ in range(n))
        r.finish()
        if header.hash != signed.block_hash:
            raise DecodeError("compact proposal: header does not match the signed block hash")
        return cls(signed, header, hashes)

    def proposal(self, transactions: Sequence[Transaction]) -> Proposal:
        """The full proposal, given the transactions the hashes name (in order)."""
        s = self.signed
        return Proposal(s.chain_id, s.height, s.round, s.valid_round,
                        Block(self.header, tuple(transactions)), s.proposer, s.signature)
