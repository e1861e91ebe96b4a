"""Model versions on CTBC: a commit is accepted only if it is exactly the aggregate of the signed
updates it names; a tampered model is refused and becomes evidence against its signer."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dualchain.apps.ctbc.fl import (
    ModelCommit,
    ModelCommitChecker,
    SignedUpdate,
    aggregate,
    fl_rules,
    sign_update,
)
from dualchain.apps.ctbc.payloads import Evidence, EvidenceKind
from dualchain.apps.ctbc.registry import RegistryApp
from dualchain.apps.genesis import FlParams
from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import ValidationError
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import TxKind
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import decode_params, encode_params
from tests.ledger_builders import make_block, make_tx
from tests.unit.apps.ctbc.test_registry import CHAIN, SIGNERS, make_genesis, make_qc

SHAPES = [("w", (2, 5))]
SIZE = 10


@pytest.fixture
def setup(tmp_path: Path, verifier: SignatureVerifier):
    blobs = BlobStore(tmp_path / "blobs")
    base = np.linspace(-1, 1, SIZE, dtype=np.float32)
    base_blob = encode_params(base, SHAPES)
    blobs.put(base_blob)
    genesis = replace(make_genesis(n=4), fl=FlParams(
        model_hash=hashlib.sha256(base_blob).hexdigest(), max_update_norm=10.0))
    clients = [Signer.generate(Algorithm.ML_DSA_65) for _ in range(2)]
    updates = []
    for i, client in enumerate(clients):
        delta = np.full(SIZE, 0.1 * (i + 1), np.float32)
        update = sign_update(client, CHAIN, 0, 64, 1, encode_params(delta, SHAPES))
        blobs.put(update.encoded)
        updates.append((update, delta))
    result = aggregate(fl_rules(genesis), base, updates, 0)
    good = encode_params(result.params, SHAPES)
    commit = ModelCommit(1, 0, hashlib.sha256(good).digest(),
                         tuple((u.digest, 0.5) for u, _ in updates))
    return genesis, blobs, base_blob, commit, result.params


def test_the_checker_accepts_the_true_aggregate_and_stores_the_model(setup, verifier) -> None:
    genesis, blobs, base_blob, commit, params = setup
    checker = ModelCommitChecker(fl_rules(genesis), blobs, verifier)
    checker.check(commit, hashlib.sha256(base_blob).digest(), 0)
    assert np.array_equal(decode_params(blobs.get(commit.model_hash)).flat, params)


def test_a_tampered_model_is_refused(setup, verifier) -> None:
    genesis, blobs, base_blob, commit, params = setup
    tampered = encode_params(params + np.float32(0.01), SHAPES)
    bad = replace(commit, model_hash=hashlib.sha256(tampered).digest())
    checker = ModelCommitChecker(fl_rules(genesis), blobs, verifier)
    with pytest.raises(ValidationError) as info:
        checker.check(bad, hashlib.sha256(base_blob).digest(), 0)
    assert info.value.code == "model_mismatch"


def test_a_missing_update_blob_and_a_forged_update_are_refused(setup, verifier) -> None:
    genesis, blobs, base_blob, commit, _ = setup
    checker = ModelCommitChecker(fl_rules(genesis), blobs, verifier)
    parent = hashlib.sha256(base_blob).digest()
    missing = replace(commit, updates=((bytes(32), 1.0),))
    with pytest.raises(ValidationError) as info:
        checker.check(missing, parent, 0)
    assert info.value.code == "missing_blob"
    first = SignedUpdate.decode(blobs.get(commit.updates[0][0]))
    forged = replace(first, samples=first.samples + 1)  # the signature no longer covers it
    forged.__dict__.pop("encoded", None)
    blobs.put(forged.encoded)
    with pytest.raises(ValidationError) as info:
        checker.check(replace(commit, updates=((forged.digest, 1.0),)), parent, 0)
    assert info.value.code == "bad_signature"


def test_a_commit_for_the_wrong_version_is_stale(setup, verifier) -> None:
    genesis, blobs, base_blob, commit, _ = setup
    checker = ModelCommitChecker(fl_rules(genesis), blobs, verifier)
    with pytest.raises(ValidationError) as info:
        checker.check(replace(commit, version=2, parent_version=1),
                      hashlib.sha256(base_blob).digest(), 0)
    assert info.value.code == "stale_version"


def test_the_registry_commits_a_version_and_records_bad_model_evidence(setup, verifier) -> None:
    genesis, blobs, base_blob, commit, params = setup
    app = RegistryApp(genesis, verifier, blobs)
    assert app.latest_model() == (0, hashlib.sha256(base_blob).digest(), 0)
    author, reporter = SIGNERS[0], SIGNERS[1]
    good_tx = make_tx(author, 0, CHAIN, commit.encode(), TxKind.MODEL_VERSION)
    head = genesis.genesis_block().header
    proposer = next(s for s in SIGNERS if s.id == app.committee(1).proposer(1, 0))
    block = make_block(head, [good_tx], proposer, CHAIN, app_hash=app.app_hash())
    app.apply_block(block)
    assert app.latest_model() == (1, commit.model_hash, 1)

    # A second commit of version 2 whose model is not the aggregate: refused at admission, and
    # its signed transaction proves the offence.
    update = SignedUpdate.decode(blobs.get(commit.updates[0][0]))
    update2 = sign_update(Signer.generate(Algorithm.ML_DSA_65), CHAIN, 1, 64, 2, update.params)
    blobs.put(update2.encoded)
    wrong = encode_params(params + np.float32(1.0), SHAPES)
    bad_commit = ModelCommit(2, 1, hashlib.sha256(wrong).digest(), ((update2.digest, 1.0),))
    bad_tx = make_tx(author, 1, CHAIN, bad_commit.encode(), TxKind.MODEL_VERSION)
    with pytest.raises(ValidationError) as info:
        app.check_tx(bad_tx)
    assert info.value.code == "model_mismatch"
    evidence = Evidence(EvidenceKind.BAD_MODEL, bad_tx.encoded, b"").encode()
    ev_tx = make_tx(reporter, 0, CHAIN, evidence, TxKind.EVIDENCE)
    app.check_tx(ev_tx)
    block2 = make_block(block.header, [ev_tx], next(
        s for s in SIGNERS if s.id == app.committee(2).proposer(2, 0)), CHAIN,
        app_hash=app.app_hash(), parent_qc=make_qc(block.header, app.committee(1).members))
    app.apply_block(block2)
    assert app.stats(0)[author.id].misbehaviour == 1
    assert app.latest_model() == (1, commit.model_hash, 1)
    # Evidence against a correct commit is refused: nobody can be blamed for an honest model.
    honest = Evidence(EvidenceKind.BAD_MODEL, good_tx.encoded, b"").encode()
    with pytest.raises(ValidationError):
        app.check_tx(make_tx(reporter, 1, CHAIN, honest, TxKind.EVIDENCE))


def test_precheck_leaves_check_tx_only_a_cached_verdict(setup, verifier, monkeypatch) -> None:
    """The daemon re-executes a commit off the event loop with ``precheck``; ``check_tx``
    afterwards must not aggregate again."""
    genesis, blobs, _, commit, _ = setup
    app = RegistryApp(genesis, verifier, blobs)
    tx = make_tx(SIGNERS[0], 0, CHAIN, commit.encode(), TxKind.MODEL_VERSION)
    app.precheck(tx)
    import dualchain.apps.ctbc.fl as fl

    def no_more(*args, **kwargs):
        raise AssertionError("aggregated again")

    monkeypatch.setattr(fl, "aggregate", no_more)
    app.check_tx(tx)  # the cached verdict: accepted
    app.precheck(make_tx(SIGNERS[0], 0, CHAIN, b"not a commit", TxKind.MODEL_VERSION))
