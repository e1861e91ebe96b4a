"""Single-chain mode: a ``single_chain`` CTBC runs CMBC's management application on its own
committed blocks (seed 000 Table 5's baseline), with CMBC's rules, and a dual-chain CTBC still
refuses those transactions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualchain.apps.cmbc.payloads import ClientRegistration, StateReport
from dualchain.apps.genesis import Genesis, GenesisError, SchedParams
from dualchain.chain.errors import ValidationError
from dualchain.chain.types import TxKind
from dualchain.chain.verifier import SignatureVerifier
from tests.ledger_builders import make_signer
from tests.unit.apps.ctbc.test_registry import SIGNERS, Driver, make_genesis

CLIENT = make_signer(41)
STRANGER = make_signer(42)
NODE = SIGNERS[0]
REPORT = StateReport(task=1, rtt_ms=10, completion_ms=2000, speed_milli=300_000, failures=0,
                     disconnected_ms=0, samples=640)


def _single(**kw: object) -> Genesis:
    return replace(make_genesis(), single_chain=True, sched=SchedParams(), **kw)


def test_management_transactions_apply_on_a_single_chain(verifier: SignatureVerifier) -> None:
    chain = Driver(_single(), verifier, apps=2)  # (commit checks both replicas agree)
    register = chain.tx(CLIENT, TxKind.CLIENT_REGISTER, ClientRegistration(NODE.id).encode())
    chain.app.check_tx(register)
    before = chain.app.app_hash()
    after = chain.commit(chain.block([register]))
    assert after != before
    management = chain.app.management
    assert management is not None and management.clients() == [CLIENT.id]
    chain.step([chain.tx(CLIENT, TxKind.STATE_REPORT, REPORT.encode())])
    assert management.latest_report(CLIENT.id) == REPORT
    assert management.is_server_node(NODE.id)


def test_a_refused_management_transaction_changes_nothing_but_its_nonce(
        verifier: SignatureVerifier) -> None:
    chain = Driver(_single(), verifier)
    report = chain.tx(STRANGER, TxKind.STATE_REPORT, REPORT.encode())  # unregistered
    with pytest.raises(ValidationError) as refused:
        chain.app.check_tx(report)
    assert refused.value.code == "unknown_client"
    chain.step([report])
    assert chain.app.last_failed == [(report.hash, "unknown_client")]
    assert chain.app.management is not None and chain.app.management.clients() == []


def test_validating_a_block_leaves_the_management_state_alone(
        verifier: SignatureVerifier) -> None:
    chain = Driver(_single(), verifier)
    block = chain.block([chain.tx(CLIENT, TxKind.CLIENT_REGISTER,
                                  ClientRegistration(NODE.id).encode())])
    before = chain.app.app_hash()
    chain.app.validate_block(block)
    assert chain.app.app_hash() == before
    assert chain.app.management is not None and chain.app.management.clients() == []
    chain.commit(block)  # and the validated block still applies
    assert chain.app.management.clients() == [CLIENT.id]


def test_a_dual_chain_ctbc_refuses_management_transactions(verifier: SignatureVerifier) -> None:
    chain = Driver(make_genesis(), verifier)
    register = chain.tx(CLIENT, TxKind.CLIENT_REGISTER, ClientRegistration(NODE.id).encode())
    with pytest.raises(ValidationError):
        chain.app.check_tx(register)
    assert chain.app.management is None


def test_the_single_chain_flag_round_trips_and_stays_on_ctbc() -> None:
    genesis = _single()
    again = Genesis.from_json(genesis.to_json())
    assert again.single_chain and again.sched == SchedParams() and again.hash == genesis.hash
    assert "single_chain" not in make_genesis().to_json()  # dual-chain hashes are unchanged
    with pytest.raises(GenesisError):
        replace(make_genesis(), sched=SchedParams())  # plans need cmbc or a single chain
    data = genesis.to_json()
    data["single_chain"] = "yes"
    with pytest.raises(GenesisError):
        Genesis.from_json(data)
