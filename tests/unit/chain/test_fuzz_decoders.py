"""Fuzzing every decoder and the transaction rules: bad bytes give a typed error, never a crash.

Mutated encodings either fail with DecodeError or decode to a value whose canonical encoding is
exactly the input (there is one encoding per value); mutated transactions that still decode are
refused by validation with a ValidationError.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualchain.chain import wire
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.proposals import CompactProposal
from dualchain.chain.types import (
    Block,
    BlockHeader,
    QuorumCertificate,
    Transaction,
    TxKind,
    Vote,
    _decode_transaction_fast,
)
from dualchain.chain.validation import (
    LedgerParams,
    build_block,
    check_transaction,
    sign_transaction,
)
from dualchain.chain.verifier import SignatureVerifier
from tests.conftest import CHAIN_ID
from tests.ledger_builders import make_signer

NOW = 1_800_000_000_000
CANONICAL_DECODERS = [Transaction.decode, Block.decode, BlockHeader.decode, Vote.decode,
                      QuorumCertificate.decode, CompactProposal.decode]
WIRE_DECODERS = [wire.decode_transaction, wire.decode_block, wire.decode_vote]

_signer = make_signer(7)
_tx = sign_transaction(_signer, CHAIN_ID, TxKind.MEMO, b"fuzz me", 0, NOW)
_block = build_block(_signer, None, (_tx,), CHAIN_ID, NOW)
_verifier = SignatureVerifier(workers=1)
_params = LedgerParams(CHAIN_ID)

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


@pytest.mark.parametrize("decode", CANONICAL_DECODERS + WIRE_DECODERS,
                         ids=lambda f: f.__qualname__)
@fuzz
@given(data=st.binary(max_size=2048))
def test_random_bytes_give_decode_error_or_a_value(decode, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@fuzz
@given(data=mutated(_block.encoded))
def test_mutated_canonical_blocks_never_decode_to_another_encoding(data: bytes) -> None:
    try:
        block = Block.decode(data)
    except DecodeError:
        return
    # Rebuild the values field by field so that no encoding cached by the decoder is reused.
    fresh = Block(replace(block.header), tuple(replace(tx) for tx in block.transactions))
    assert fresh.encoded == data


@fuzz
@given(data=mutated(wire.block_to_proto(_block).SerializeToString()))
def test_mutated_wire_blocks_give_decode_error_or_a_value(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        wire.decode_block(data)


@fuzz
@given(data=mutated(_tx.encoded))
def test_mutated_transactions_are_refused_by_decoding_or_validation(data: bytes) -> None:
    try:
        tx = Transaction.decode(data)
    except DecodeError:
        return
    if tx == _tx:
        return
    with pytest.raises(ValidationError):
        check_transaction(tx, _params, _verifier, NOW)


@fuzz
@given(data=st.one_of(mutated(_tx.encoded), st.binary(max_size=64)))
def test_the_fast_transaction_decoder_agrees_with_the_checked_one(data: bytes) -> None:
    """Transaction.decode takes a one-pass path for well-formed input; on every input it must
    give what the field-by-field decoder gives (the same value, or a DecodeError)."""
    try:
        expected = Transaction._decode_checked(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            Transaction.decode(data)
        return
    got = Transaction.decode(data)
    assert got == expected
    assert (got.encoded, got.signing_bytes, got.hash) == (
        expected.encoded, expected.signing_bytes, expected.hash)
    assert got.signing_bytes == replace(got).signing_bytes  # what a fresh value would sign


def test_a_well_formed_transaction_takes_the_fast_path() -> None:
    assert _decode_transaction_fast(_tx.encoded) == _tx
    assert _decode_transaction_fast(_tx.encoded + b"\x00") is None
