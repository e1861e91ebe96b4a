"""Detection inside the committee's re-execution: a commit names its discard set, every replica
re-runs the genesis's defense on the same updates, and a commit whose discard set (or model) does
not reproduce is refused, also when a node lies about it (``adversary.node.DiscardLie``)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dualchain.adversary.node import DiscardLie, make_node_attack
from dualchain.apps.ctbc.fl import (
    ModelCommit,
    ModelCommitChecker,
    aggregate_pool,
    fl_rules,
    sign_update,
)
from dualchain.apps.genesis import FlParams, Genesis, GenesisError
from dualchain.apps.genesis_defense import DefenseParams
from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import encode_params
from dualchain.learning.screening import REASON_LOW
from dualchain.node.attack import attacked_commit
from tests.unit.apps.ctbc.test_registry import CHAIN, make_genesis

SHAPES = [("w", (4, 8))]
SIZE = 32
HONEST, FLIPPED = 6, 2


@pytest.fixture
def pool(tmp_path: Path):
    """A CTBC genesis with the cluster defense, its blob store and 8 signed updates: 6 honest
    (one direction plus noise) and 2 sign-flipped."""
    blobs = BlobStore(tmp_path / "blobs")
    base = np.linspace(-1, 1, SIZE, dtype=np.float32)
    base_blob = encode_params(base, SHAPES)
    blobs.put(base_blob)
    genesis = replace(make_genesis(n=4), fl=FlParams(
        model_hash=hashlib.sha256(base_blob).hexdigest(), max_update_norm=10.0),
        defense=DefenseParams(rule="cluster"))
    rng = np.random.default_rng(0)
    direction = rng.normal(0, 0.1, SIZE)
    updates = []
    for i in range(HONEST + FLIPPED):
        delta = direction + rng.normal(0, 0.02, SIZE)
        delta = (-delta if i >= HONEST else delta).astype(np.float32)
        update = sign_update(Signer.generate(Algorithm.ML_DSA_65), CHAIN, 0, 64, 1,
                             encode_params(delta, SHAPES))
        blobs.put(update.encoded)
        updates.append((update, delta))
    return genesis, blobs, hashlib.sha256(base_blob).digest(), base, updates


def _commit(outcome, params) -> ModelCommit:
    model = hashlib.sha256(encode_params(params, SHAPES)).digest()
    return ModelCommit(1, 0, model, outcome.updates, outcome.discarded)


def test_the_honest_commit_names_the_flipped_updates_and_is_accepted(
        pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    flipped = {u.digest for u, _ in updates[HONEST:]}
    assert {d for d, _ in outcome.discarded} == flipped
    assert {r for _, r in outcome.discarded} == {REASON_LOW}
    assert len(outcome.updates) == HONEST
    ModelCommitChecker(fl_rules(genesis), blobs, verifier).check(
        _commit(outcome, outcome.params), parent, 0)


@pytest.mark.parametrize("mode", ["drop_honest", "keep_flagged"])
def test_a_node_lying_about_its_discard_set_is_refused(
        pool, verifier: SignatureVerifier, mode: str) -> None:
    genesis, blobs, parent, base, updates = pool
    rules = fl_rules(genesis)
    outcome = aggregate_pool(rules, base, updates, 0)
    honest = _commit(outcome, outcome.params)
    params, lie = attacked_commit(DiscardLie(mode=mode), rules, base, outcome.params, honest,
                                  {u.digest: (u, d) for u, d in updates})
    assert lie.discarded != honest.discarded
    lie = replace(lie, model_hash=hashlib.sha256(encode_params(params, SHAPES)).digest())
    with pytest.raises(ValidationError) as info:
        ModelCommitChecker(rules, blobs, verifier).check(lie, parent, 0)
    assert info.value.code == "model_mismatch"
    assert "discard set does not reproduce" in info.value.reason


def test_a_wrong_reason_is_refused_too(pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    wrong = tuple((d, "copy") for d, _ in outcome.discarded)
    with pytest.raises(ValidationError, match="other reason"):
        ModelCommitChecker(fl_rules(genesis), blobs, verifier).check(
            replace(_commit(outcome, outcome.params), discarded=wrong), parent, 0)


def test_without_a_defense_nothing_is_discarded(pool) -> None:
    genesis, _, _, base, updates = pool
    outcome = aggregate_pool(fl_rules(replace(genesis, defense=None)), base, updates, 0)
    assert outcome.discarded == () and len(outcome.updates) == HONEST + FLIPPED


def test_the_poisoning_aggregator_changes_only_its_versions(pool) -> None:
    genesis, _, _, base, updates = pool
    attack = make_node_attack({"kind": "poison", "versions": [1], "rho": 0.5})
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    commit = _commit(outcome, outcome.params)
    params, same = attacked_commit(attack, fl_rules(genesis), base, outcome.params, commit, {})
    assert same == commit and not np.array_equal(params, outcome.params)
    later = replace(commit, version=2)
    params, _ = attacked_commit(attack, fl_rules(genesis), base, outcome.params, later, {})
    assert np.array_equal(params, outcome.params)


def test_the_discard_set_round_trips_and_an_unknown_reason_is_malformed() -> None:
    commit = ModelCommit(3, 2, b"\x01" * 32, ((b"\x02" * 32, 0.5),),
                         ((b"\x03" * 32, "copy"), (b"\x04" * 32, "not_selected")))
    assert ModelCommit.decode(commit.encode()) == commit
    assert commit.digests == [b"\x02" * 32, b"\x03" * 32, b"\x04" * 32]
    bad = replace(commit, discarded=((b"\x03" * 32, "nosy"),))
    with pytest.raises(DecodeError, match="discard reason"):
        ModelCommit.decode(bad.encode())


def test_the_genesis_defense_section_round_trips_and_bad_values_are_refused() -> None:
    genesis = replace(make_genesis(n=4), fl=FlParams(model_hash="ab" * 32),
                      defense=DefenseParams(rule="multi_krum", krum_f=2, watermark_length=512))
    again = Genesis.from_json(genesis.to_json())
    assert again.defense == genesis.defense and again.hash == genesis.hash
    rules = fl_rules(again)
    assert rules.defense.rule == "multi_krum" and rules.defense.robust.f == 2
    assert rules.defense.watermark is not None and rules.defense.watermark.length == 512
    assert "defense" not in replace(genesis, defense=None).to_json()  # old hashes unchanged
    for bad, where in ((DefenseParams(rule="magic"), "defense.rule"),
                       (DefenseParams(watermark_length=10), "defense.watermark_length"),
                       (DefenseParams(trim_beta=0.5), "defense.trim_beta")):
        with pytest.raises(GenesisError, match=where):
            replace(genesis, defense=bad)
    with pytest.raises(GenesisError, match="needs an fl section"):
        replace(make_genesis(n=4), defense=DefenseParams())
