"""Bad blocks never reach the store: mutated blocks are refused and the store is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from dualchain.chain.errors import DualchainError
from dualchain.chain.store import BlockStore
from dualchain.chain.types import Block, TxKind
from dualchain.chain.validation import LedgerParams, build_block, check_block, sign_transaction
from dualchain.chain.verifier import SignatureVerifier
from tests.conftest import CHAIN_ID
from tests.ledger_builders import make_signer
from tests.unit.chain.test_fuzz_decoders import mutated

NOW = 1_800_000_000_000
_proposer = make_signer(11)
_sender = make_signer(12)
_genesis = build_block(_proposer, None, (), CHAIN_ID, NOW)
_block = build_block(
    _proposer, _genesis.header,
    tuple(sign_transaction(_sender, CHAIN_ID, TxKind.MEMO, b"p%d" % i, i, NOW) for i in range(3)),
    CHAIN_ID, NOW + 1,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> BlockStore:
    with BlockStore(Path(tmp_path_factory.mktemp("fuzz")) / "chain.sqlite") as s:
        s.append(_genesis)
        yield s


def accept(store: BlockStore, data: bytes, verifier: SignatureVerifier) -> None:
    """What a daemon does with block bytes from a peer: decode, validate, then store."""
    block = Block.decode(data)
    parent = store.get_header(block.header.parent_hash)
    check_block(block, parent, LedgerParams(CHAIN_ID), verifier, NOW + 10, store.next_nonce,
                {_proposer.id: _proposer.public_key}.get)
    store.append(block)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated(_block.encoded))
def test_mutated_blocks_change_nothing(store: BlockStore, data: bytes) -> None:
    if data == _block.encoded:
        return
    verifier = SignatureVerifier(workers=1)
    with pytest.raises(DualchainError):
        accept(store, data, verifier)
    assert store.head_hash() == _genesis.hash
    assert store.next_nonce(_sender.id) == 0
    assert store.check_consistency() == []


def test_the_unmutated_block_is_accepted(store: BlockStore) -> None:
    accept(store, _block.encoded, SignatureVerifier(workers=1))
    assert store.head_hash() == _block.hash
