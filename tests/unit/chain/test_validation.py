"""Ledger rules: each broken rule is refused with a typed error that names it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualchain.chain.errors import (
    OversizedError,
    ReplayError,
    SignatureError,
    ValidationError,
)
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import Block, TxKind
from dualchain.chain.validation import (
    LedgerParams,
    build_block,
    check_block,
    check_nonce,
    check_transaction,
    sign_header,
    sign_transaction,
)
from dualchain.chain.verifier import SignatureVerifier
from tests.conftest import CHAIN_ID

NOW = 1_800_000_000_000


def tx(signer: Signer, nonce: int = 0, payload: bytes = b"hello", **kw):
    return sign_transaction(
        signer, kw.pop("chain_id", CHAIN_ID), kw.pop("kind", TxKind.MEMO), payload, nonce,
        kw.pop("timestamp_ms", NOW),
    )


def test_a_well_formed_signed_transaction_is_admitted(alice, params, verifier) -> None:
    check_transaction(tx(alice), params, verifier, NOW)


@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        (lambda s: tx(s, chain_id="other"), ValidationError, "wrong_chain"),
        (lambda s: tx(s, kind=TxKind.UNSPECIFIED), ValidationError, "bad_kind"),
        (lambda s: tx(s, payload=b"x" * 50_000), OversizedError, "oversized"),
        (lambda s: tx(s, timestamp_ms=NOW + 31_000), ValidationError, "future_timestamp"),
        (lambda s: tx(s, timestamp_ms=NOW - 601_000), ValidationError, "stale_timestamp"),
        (lambda s: replace(tx(s), payload=b"tampered"), SignatureError, "bad_signature"),
        (lambda s: replace(tx(s), sender=bytes(32)), SignatureError, "bad_signature"),
        (lambda s: replace(tx(s), signature=tx(s).signature[:-1]), SignatureError,
         "bad_signature"),
        (lambda s: replace(tx(s), public_key=s.public_key[:-1]), SignatureError,
         "bad_signature"),
    ],
)
def test_broken_transactions_are_refused(alice, params, verifier, make, error, code) -> None:
    with pytest.raises(error) as info:
        check_transaction(make(alice), params, verifier, NOW)
    assert info.value.code == code


def test_a_transaction_signature_made_for_another_domain_is_refused(alice, params, verifier):
    good = tx(alice)
    vote_signed = good.with_signature(alice.sign(Domain.VOTE, good.signing_bytes))
    with pytest.raises(SignatureError):
        check_transaction(vote_signed, params, verifier, NOW)


def test_a_key_of_another_parameter_set_is_refused(alice, verifier) -> None:
    with pytest.raises(SignatureError, match="ML-DSA-44"):
        check_transaction(tx(alice), LedgerParams(CHAIN_ID, algorithm=Algorithm.ML_DSA_44),
                          verifier, NOW)


def test_nonces_refuse_replays_and_gaps(alice) -> None:
    check_nonce(tx(alice, nonce=3), 3)
    with pytest.raises(ReplayError):
        check_nonce(tx(alice, nonce=2), 3)
    with pytest.raises(ValidationError) as info:
        check_nonce(tx(alice, nonce=5), 3)
    assert info.value.code == "nonce_gap"


@pytest.fixture(scope="module")
def chain(alice, bob):
    """Genesis by alice and a block 1 with bob's nonces 0 and 1 and alice's nonce 0."""
    genesis = build_block(alice, None, (), CHAIN_ID, NOW)
    txs = (tx(bob, 0), tx(alice, 0), tx(bob, 1))
    block = build_block(alice, genesis.header, txs, CHAIN_ID, NOW + 1000)
    return genesis, block


def keys(*signers: Signer):
    table = {s.id: s.public_key for s in signers}
    return table.get


def check(block: Block, parent, params, verifier, signers, next_nonce=lambda sender: 0):
    check_block(block, parent, params, verifier, NOW + 1000, next_nonce, keys(*signers))


def test_a_valid_block_passes(chain, params, verifier, alice) -> None:
    genesis, block = chain
    check(genesis, None, params, verifier, [alice])
    check(block, genesis.header, params, verifier, [alice])


def resign(alice: Signer, block: Block, **header_changes) -> Block:
    return Block(sign_header(alice, replace(block.header, **header_changes)), block.transactions)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"parent_hash": b"\x01" * 32}, "bad_parent"),
        ({"height": 5}, "bad_height"),
        ({"timestamp_ms": NOW - 1}, "bad_timestamp"),
        ({"tx_root": b"\x02" * 32}, "bad_root"),
        ({"chain_id": "other"}, "wrong_chain"),
        ({"timestamp_ms": NOW + 1000 + 31_000}, "future_timestamp"),
    ],
)
def test_broken_headers_are_refused(chain, params, verifier, alice, change, code) -> None:
    genesis, block = chain
    with pytest.raises(ValidationError) as info:
        check(resign(alice, block, **change), genesis.header, params, verifier, [alice])
    assert info.value.code == code


def test_header_signatures_are_checked_against_the_proposer(chain, params, verifier, alice, bob):
    genesis, block = chain
    with pytest.raises(ValidationError, match="unknown") as info:
        check(block, genesis.header, params, verifier, [bob])
    assert info.value.code == "unknown_proposer"
    forged = Block(block.header.with_signature(bob.sign(Domain.BLOCK, block.header.signing_bytes)),
                   block.transactions)
    with pytest.raises(SignatureError):
        check(forged, genesis.header, params, verifier, [alice])


def test_block_transactions_follow_the_nonce_rules(chain, params, verifier, alice, bob) -> None:
    genesis, block = chain
    with pytest.raises(ReplayError):
        check(block, genesis.header, params, verifier, [alice],
              next_nonce=lambda s: 1 if s == bob.id else 0)
    out_of_order = build_block(alice, genesis.header, (tx(bob, 1), tx(bob, 0)), CHAIN_ID,
                               NOW + 1000)
    with pytest.raises(ValidationError) as info:
        check(out_of_order, genesis.header, params, verifier, [alice])
    assert info.value.code == "nonce_gap"


def test_duplicates_oversize_and_bad_signatures_inside_blocks(chain, params, verifier, alice):
    genesis, block = chain
    dup = build_block(alice, genesis.header, (block.transactions[0],) * 2, CHAIN_ID, NOW + 1000)
    with pytest.raises(ValidationError) as info:
        check(dup, genesis.header, params, verifier, [alice])
    assert info.value.code == "duplicate_tx"
    with pytest.raises(OversizedError):
        check(block, genesis.header, replace(params, max_block_txs=2), verifier, [alice])
    forged_tx = replace(block.transactions[1], payload=b"forged")
    forged = build_block(alice, genesis.header, (block.transactions[0], forged_tx), CHAIN_ID,
                         NOW + 1000)
    with pytest.raises(SignatureError):
        check(forged, genesis.header, params, verifier, [alice])


def test_transactions_inside_a_block_are_dated_against_the_block(alice, bob, params, verifier):
    # Old blocks stay valid when synced much later: no local clock in the tx timestamp rule.
    genesis = build_block(alice, None, (), CHAIN_ID, NOW)
    old = build_block(alice, genesis.header, (tx(bob, 0),), CHAIN_ID, NOW)
    check_block(old, genesis.header, params, SignatureVerifier(), NOW + 10**9, lambda s: 0,
                keys(alice))
    too_old = build_block(alice, genesis.header, (tx(bob, 0, timestamp_ms=NOW - 700_000),),
                          CHAIN_ID, NOW)
    with pytest.raises(ValidationError) as info:
        check(too_old, genesis.header, params, verifier, [alice])
    assert info.value.code == "stale_timestamp"
