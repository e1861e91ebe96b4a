"""Ledger values have one canonical encoding: stable hashes, exact round trips, strict decoding."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualchain.chain.errors import DecodeError
from dualchain.chain.proposals import Proposal, SignedProposal
from dualchain.chain.types import (
    Block,
    BlockHeader,
    QuorumCertificate,
    Transaction,
    TxKind,
    Vote,
    VoteStep,
    sha256,
)

GOLDEN_TX = Transaction(
    "golden", TxKind.MEMO, bytes(range(32)), b"\x01" * 1952, 7, 1_700_000_000_000, b"payload",
    b"\x02" * 3309,
)
GOLDEN_HEADER = BlockHeader(
    "golden", 5, b"\x03" * 32, b"\x04" * 32, 1_700_000_000_000, bytes(range(32)), view=2,
    pow_target=b"\x00" * 4 + b"\xff" * 28, pow_nonce=99, signature=b"\x05" * 10,
)


def test_hashes_are_pinned_so_the_encoding_cannot_drift_silently() -> None:
    # A change here breaks every stored chain and every signature: it needs a new type tag.
    assert GOLDEN_TX.hash.hex() == (
        "e6b8d05ee8e95d1568e08be757c9fb3a3ea48927e6cc7d3f38157c6c73134802"
    )
    assert sha256(GOLDEN_TX.signing_bytes).hex() == (
        "5eed89cbc4e99898b128dd36745f4341aad150f18350caf890a00b1a59128193"
    )
    assert GOLDEN_HEADER.hash.hex() == (
        "05914e6a4e0169da8f3b2e75edd959a96805c841777908cf8c8999291b0a398d"
    )


def test_decoded_values_keep_exactly_the_bytes_a_fresh_encoding_gives() -> None:
    decoded = Transaction.decode(GOLDEN_TX.encoded)
    assert decoded.signing_bytes == GOLDEN_TX.signing_bytes
    assert decoded.hash == GOLDEN_TX.hash


def test_signing_bytes_leave_out_the_signature_but_the_tx_hash_covers_it() -> None:
    resigned = GOLDEN_TX.with_signature(b"\x09" * 3309)
    assert resigned.signing_bytes == GOLDEN_TX.signing_bytes
    assert resigned.hash != GOLDEN_TX.hash


def test_block_hash_ignores_the_header_signature_only() -> None:
    assert GOLDEN_HEADER.with_signature(b"other").hash == GOLDEN_HEADER.hash
    assert replace(GOLDEN_HEADER, pow_nonce=100).hash != GOLDEN_HEADER.hash
    assert replace(GOLDEN_HEADER, view=3).hash != GOLDEN_HEADER.hash


def test_every_field_changes_the_transaction_hash() -> None:
    changes = {
        "chain_id": "other",
        "kind": TxKind.STATE_REPORT,
        "sender": bytes(32),
        "public_key": b"\x01" * 1951,
        "nonce": 8,
        "timestamp_ms": 1,
        "payload": b"payloae",
    }
    for name, value in changes.items():
        assert replace(GOLDEN_TX, **{name: value}).signing_bytes != GOLDEN_TX.signing_bytes, name


def test_round_trips_are_exact() -> None:
    qc = QuorumCertificate(
        "golden", 4, 1, VoteStep.PRECOMMIT, b"\x07" * 32,
        ((b"\x01" * 32, b"s1"), (b"\x02" * 32, b"s2")),
    )
    header = replace(GOLDEN_HEADER, parent_qc=qc)
    block = Block(header, (GOLDEN_TX, replace(GOLDEN_TX, nonce=8)))
    assert Block.decode(block.encoded) == block
    assert Block.decode(block.encoded).encoded == block.encoded
    assert BlockHeader.decode(header.encoded) == header
    assert Transaction.decode(GOLDEN_TX.encoded) == GOLDEN_TX
    assert QuorumCertificate.decode(qc.encoded) == qc
    vote = Vote("golden", 4, 1, VoteStep.PREVOTE, b"\x07" * 32, b"\x01" * 32, b"sig")
    assert Vote.decode(vote.encoded) == vote
    assert [v.voter for v in qc.votes()] == [b"\x01" * 32, b"\x02" * 32]


def test_one_type_cannot_be_decoded_as_another() -> None:
    with pytest.raises(DecodeError, match="wrong type tag"):
        Block.decode(GOLDEN_TX.encoded)
    with pytest.raises(DecodeError, match="wrong type tag"):
        Transaction.decode(GOLDEN_TX.signing_bytes)


def test_unknown_kinds_steps_and_unsorted_certificates_are_refused() -> None:
    bad_kind = GOLDEN_TX.encoded.replace(b"\x00\x00\x00\x01" + bytes(range(32)),
                                         b"\x00\x00\x03\xe7" + bytes(range(32)), 1)
    with pytest.raises(DecodeError, match="unknown transaction kind 999"):
        Transaction.decode(bad_kind)
    qc = QuorumCertificate(
        "g", 1, 0, VoteStep.PRECOMMIT, bytes(32), ((b"\x02" * 32, b"a"), (b"\x01" * 32, b"b"))
    )
    with pytest.raises(DecodeError, match="sorted"):
        QuorumCertificate.decode(qc.encoded)


def test_a_proposal_signature_covers_exactly_its_signed_part() -> None:
    block = Block(GOLDEN_HEADER, (GOLDEN_TX,))
    proposal = Proposal("golden", 5, 2, 1, block, bytes(range(32)), b"sig")
    part = proposal.signed_part
    assert part.block_hash == block.hash
    assert part.signing_bytes == proposal.signing_bytes
    assert SignedProposal.decode(part.encoded) == part
    assert Proposal.decode(proposal.encoded) == proposal
    other = replace(proposal, block=Block(replace(GOLDEN_HEADER, view=9), ()))
    assert other.signing_bytes != proposal.signing_bytes


def test_peek_reads_a_proposals_signed_part_without_its_block() -> None:
    proposal = Proposal("golden", 5, 2, -1, Block(GOLDEN_HEADER, (GOLDEN_TX,)), bytes(32), b"s")
    assert Proposal.peek(proposal.encoded) == proposal.signed_part
    truncated = proposal.encoded[: len(proposal.encoded) - 100]  # block cut short: peek is fine
    assert Proposal.peek(truncated) == proposal.signed_part
