"""Fixtures shared by all tests."""

from __future__ import annotations

import pytest

from dualchain.chain.identity import Signer
from dualchain.chain.validation import LedgerParams
from dualchain.chain.verifier import SignatureVerifier
from tests.ledger_builders import make_signer

CHAIN_ID = "test-chain"


@pytest.fixture(scope="session")
def alice() -> Signer:
    return make_signer(1)


@pytest.fixture(scope="session")
def bob() -> Signer:
    return make_signer(2)


@pytest.fixture(scope="session")
def params() -> LedgerParams:
    return LedgerParams(chain_id=CHAIN_ID)


@pytest.fixture
def verifier() -> SignatureVerifier:
    with SignatureVerifier(workers=2) as v:
        yield v
