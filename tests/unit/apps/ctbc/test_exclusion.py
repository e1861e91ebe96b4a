"""A validator with proven misbehaviour may not commit model versions (seed 003 §V-E: the chain
disregards a poisoning edge server while aggregation goes on), for the reputation window."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dualchain.apps.ctbc.exclusion import excluded
from dualchain.apps.ctbc.fl import ModelCommit, SignedUpdate, aggregate, fl_rules, sign_update
from dualchain.apps.ctbc.payloads import Evidence, EvidenceKind
from dualchain.apps.ctbc.registry import RegistryApp
from dualchain.apps.ctbc.reputation import ValidatorStats
from dualchain.chain.errors import ValidationError
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import TxKind
from dualchain.learning.codec import decode_params, encode_params
from tests.ledger_builders import make_block, make_tx
from tests.unit.apps.ctbc.test_fl import SHAPES
from tests.unit.apps.ctbc.test_fl import setup as fl_setup
from tests.unit.apps.ctbc.test_registry import CHAIN, SIGNERS, make_qc

A, B = b"a" * 32, b"b" * 32
BAD = ValidatorStats(misbehaviour=1)
setup = fl_setup  # the fixture, under the name the tests take


def test_misbehaviour_in_the_window_excludes_and_leaves_with_it() -> None:
    stats = {3: {A: BAD, B: ValidatorStats(votes_expected=5, votes_cast=5)}}
    assert excluded(stats, 3, 4, [A, B]) == {A}
    assert excluded(stats, 6, 4, [A, B]) == {A}  # epochs 3..6
    assert excluded(stats, 7, 4, [A, B]) == frozenset()  # out of the window: readmitted
    assert excluded(stats, 3, 4, [B]) == frozenset()  # a removed validator is not listed


def _proposer(app: RegistryApp, height: int) -> Signer:
    return next(s for s in SIGNERS if s.id == app.committee(height).proposer(height, 0))


def test_a_validator_with_bad_model_evidence_may_not_commit_but_others_carry_on(
        setup, verifier) -> None:
    genesis, blobs, _, commit, _ = setup
    app = RegistryApp(genesis, verifier, blobs)
    author, reporter = SIGNERS[0], SIGNERS[1]
    head = genesis.genesis_block().header
    block1 = make_block(head, [make_tx(author, 0, CHAIN, commit.encode(), TxKind.MODEL_VERSION)],
                        _proposer(app, 1), CHAIN, app_hash=app.app_hash())
    app.apply_block(block1)
    assert app.status_fields()["excluded"] == []

    # The author poisons version 2: refused, and the evidence is applied in block 2.
    update = SignedUpdate.decode(blobs.get(commit.updates[0][0]))
    update2 = sign_update(Signer.generate(Algorithm.ML_DSA_65), CHAIN, 1, 64, 2, update.params)
    blobs.put(update2.encoded)
    base = decode_params(blobs.get(commit.model_hash)).flat
    honest = aggregate(fl_rules(genesis), base, [(update2, decode_params(update.params).flat)], 1)
    good_blob = encode_params(honest.params, SHAPES)
    blobs.put(good_blob)
    poisoned = encode_params(honest.params - np.float32(1.0), SHAPES)
    bad = ModelCommit(2, 1, hashlib.sha256(poisoned).digest(), ((update2.digest, 1.0),))
    bad_tx = make_tx(author, 1, CHAIN, bad.encode(), TxKind.MODEL_VERSION)
    with pytest.raises(ValidationError) as info:
        app.check_tx(bad_tx)
    assert info.value.code == "model_mismatch"
    evidence = Evidence(EvidenceKind.BAD_MODEL, bad_tx.encoded, b"").encode()
    block2 = make_block(block1.header, [make_tx(reporter, 0, CHAIN, evidence, TxKind.EVIDENCE)],
                        _proposer(app, 2), CHAIN, app_hash=app.app_hash(),
                        parent_qc=make_qc(block1.header, app.committee(1).members))
    app.apply_block(block2)
    assert app.excluded_validators() == {author.id}
    assert app.status_fields()["excluded"] == [author.id]

    # Even its honest commit of version 2 is refused now; another validator's is taken.
    good = ModelCommit(2, 1, hashlib.sha256(good_blob).digest(), ((update2.digest, 1.0),))
    with pytest.raises(ValidationError) as info:
        app.check_tx(make_tx(author, 1, CHAIN, good.encode(), TxKind.MODEL_VERSION))
    assert info.value.code == "excluded_validator"
    other_tx = make_tx(reporter, 1, CHAIN, good.encode(), TxKind.MODEL_VERSION)
    app.check_tx(other_tx)
    block3 = make_block(block2.header, [other_tx], _proposer(app, 3), CHAIN,
                        app_hash=app.app_hash(),
                        parent_qc=make_qc(block2.header, app.committee(2).members))
    app.apply_block(block3)
    assert app.latest_model() == (2, good.model_hash, 3)
