"""Rewards and fair aggregation inside the committee's re-execution: with ``fl.reward_base`` a
commit carries its version's reward list, every replica recomputes theta and the list from the
same signed updates and refuses a list that is forged or does not conserve the base; the registry
credits the list to balances that are part of its app hash; ``fl.aggregation = "fair"`` (seed
002 eq. II.4) is re-executed like the staleness rule."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dualchain.apps.ctbc.fl import (
    ModelCommit,
    ModelCommitChecker,
    aggregate_pool,
    fl_rules,
    sign_update,
)
from dualchain.apps.ctbc.registry import RegistryApp
from dualchain.apps.ctbc.state import RegistryState
from dualchain.apps.genesis import FlParams, Genesis, GenesisError
from dualchain.apps.genesis_defense import DefenseParams
from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import ValidationError
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import TxKind
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import encode_params
from tests.ledger_builders import make_block, make_tx
from tests.unit.apps.ctbc.test_registry import CHAIN, SIGNERS, make_genesis

SHAPES = [("w", (4, 8))]
SIZE = 32
HONEST, FLIPPED = 6, 2
BASE = 10_000_000  # micro-units per version


def _setup(tmp_path: Path, *, defense: str = "cluster", aggregation: str = "staleness",
           reward_base: int = BASE):
    """A CTBC genesis, its blob store and 8 signed updates: 6 honest (one direction plus noise,
    of unequal lengths) and 2 sign-flipped."""
    blobs = BlobStore(tmp_path / "blobs")
    base = np.linspace(-1, 1, SIZE, dtype=np.float32)
    base_blob = encode_params(base, SHAPES)
    blobs.put(base_blob)
    genesis = replace(make_genesis(n=4), fl=FlParams(
        model_hash=hashlib.sha256(base_blob).hexdigest(), max_update_norm=10.0,
        aggregation=aggregation, reward_base=reward_base),
        defense=DefenseParams(rule=defense))
    rng = np.random.default_rng(0)
    direction = rng.normal(0, 0.1, SIZE)
    updates = []
    for i in range(HONEST + FLIPPED):
        delta = (1 + 0.2 * i) * direction + rng.normal(0, 0.03, SIZE)
        delta = (-delta if i >= HONEST else delta).astype(np.float32)
        update = sign_update(Signer.generate(Algorithm.ML_DSA_65), CHAIN, 0, 64, 1,
                             encode_params(delta, SHAPES))
        blobs.put(update.encoded)
        updates.append((update, delta))
    return genesis, blobs, hashlib.sha256(base_blob).digest(), base, updates


@pytest.fixture
def pool(tmp_path: Path):
    return _setup(tmp_path)


def _commit(outcome, **changes) -> ModelCommit:
    model = hashlib.sha256(encode_params(outcome.params, SHAPES)).digest()
    commit = ModelCommit(1, 0, model, outcome.updates, outcome.discarded, outcome.rewards)
    return replace(commit, **changes)


def _refusal(genesis, blobs, verifier, parent, commit) -> str:
    with pytest.raises(ValidationError) as info:
        ModelCommitChecker(fl_rules(genesis), blobs, verifier).check(commit, parent, 0)
    assert info.value.code == "model_mismatch"
    return info.value.reason


def test_the_reward_list_pays_the_base_to_the_honest_and_reproduces(
        pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    honest = {u.client for u, _ in updates[:HONEST]}
    assert outcome.rewards is not None
    assert {c for c, _ in outcome.rewards} == honest  # the flipped earn nothing
    assert sum(a for _, a in outcome.rewards) == BASE
    commit = _commit(outcome)
    assert ModelCommit.decode(commit.encode()) == commit
    assert commit.encode()[:4] == b"DCM3"
    ModelCommitChecker(fl_rules(genesis), blobs, verifier).check(commit, parent, 0)


def test_without_a_defense_the_flipped_are_aggregated_but_unpaid(
        tmp_path: Path, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = _setup(tmp_path, defense="none")
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    assert len(outcome.updates) == HONEST + FLIPPED and not outcome.discarded
    assert {c for c, _ in outcome.rewards} == {u.client for u, _ in updates[:HONEST]}
    ModelCommitChecker(fl_rules(genesis), blobs, verifier).check(_commit(outcome), parent, 0)


def test_a_forged_reward_list_is_refused(pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    (a, x), (b, y), *rest = outcome.rewards
    moved = tuple(sorted([(a, x + 1000), (b, y - 1000), *rest]))  # conserves, but is not it
    reason = _refusal(genesis, blobs, verifier, parent, _commit(outcome, rewards=moved))
    assert reason.startswith("the reward list is refused: reward list pays client")
    flipped = updates[-1][0].client  # a malicious client paid from an honest one's share
    stolen = tuple(sorted([(a, x - 5), (flipped, 5), (b, y), *rest]))
    reason = _refusal(genesis, blobs, verifier, parent, _commit(outcome, rewards=stolen))
    assert reason.startswith("the reward list is refused: reward list pays client")


def test_a_list_that_does_not_conserve_the_base_is_refused(
        pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    (a, x), *rest = outcome.rewards
    inflated = ((a, x + 1), *rest)
    reason = _refusal(genesis, blobs, verifier, parent, _commit(outcome, rewards=inflated))
    assert reason == (f"the reward list is refused: rewards sum to {BASE + 1} micro-units, "
                      f"the base is {BASE}")


def test_a_commit_without_the_list_or_with_one_nobody_pays_is_refused(
        tmp_path: Path, pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    reason = _refusal(genesis, blobs, verifier, parent, _commit(outcome, rewards=None))
    assert "carries no reward list" in reason
    off, blobs2, parent2, base2, updates2 = _setup(tmp_path / "off", reward_base=0)
    plain = aggregate_pool(fl_rules(off), base2, updates2, 0)
    assert plain.rewards is None
    forged = ((updates2[0][0].client, BASE),)
    reason = _refusal(off, blobs2, verifier, parent2, _commit(plain, rewards=forged))
    assert "the chain pays none" in reason


def test_the_fair_rule_is_re_executed(tmp_path: Path, verifier: SignatureVerifier) -> None:
    genesis, blobs, parent, base, updates = _setup(tmp_path, defense="none",
                                                   aggregation="fair", reward_base=0)
    rules = fl_rules(genesis)
    fair = aggregate_pool(rules, base, updates, 0)
    # theta 0 for the flipped: eq. II.4 leaves them out; the weights of the rest sum to 1.
    weights = dict(fair.updates)
    assert all(weights[u.digest] == 0.0 for u, _ in updates[HONEST:])
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6)
    ModelCommitChecker(rules, blobs, verifier).check(_commit(fair), parent, 0)
    # The same pool under the staleness rule gives another model, which the fair chain refuses.
    staleness = aggregate_pool(replace(rules, aggregation="staleness"), base, updates, 0)
    assert not np.array_equal(staleness.params, fair.params)
    reason = _refusal(genesis, blobs, verifier, parent, _commit(staleness))
    assert "the aggregate of the referenced updates hashes to" in reason


def test_the_fair_rule_and_a_plugin_aggregator_exclude_each_other() -> None:
    fl = FlParams(model_hash="0" * 64, aggregation="fair", aggregator="examples.wine:median")
    with pytest.raises(GenesisError, match="fair and a plug-in aggregator"):
        replace(make_genesis(), fl=fl)
    with pytest.raises(GenesisError, match=r"fl\.aggregation: 'mean' is not staleness or fair"):
        replace(make_genesis(), fl=FlParams(model_hash="0" * 64, aggregation="mean"))
    with pytest.raises(GenesisError, match=r"fl\.reward_base"):
        replace(make_genesis(), fl=FlParams(model_hash="0" * 64, reward_base=-1))
    with pytest.raises(GenesisError, match=r"fl\.reward_weight: 'samples' is not theta or"):
        replace(make_genesis(), fl=FlParams(model_hash="0" * 64, reward_weight="samples"))


def test_the_optional_keys_leave_a_genesis_hash_unchanged() -> None:
    plain = replace(make_genesis(), fl=FlParams(model_hash="0" * 64))
    assert "reward_base" not in plain.to_json()["fl"]
    rewarded = replace(plain, fl=replace(plain.fl, reward_base=BASE))
    assert rewarded.to_json()["fl"]["reward_base"] == BASE
    assert Genesis.from_json(rewarded.to_json()).fl == rewarded.fl
    assert Genesis.from_json(plain.to_json()).hash == plain.hash
    weighted = replace(plain, fl=replace(plain.fl, reward_weight="theta_samples"))
    assert weighted.to_json()["fl"]["reward_weight"] == "theta_samples"
    assert Genesis.from_json(weighted.to_json()).fl == weighted.fl


def test_the_registry_credits_the_list_and_replicas_agree(
        pool, verifier: SignatureVerifier) -> None:
    genesis, blobs, _, base, updates = pool
    outcome = aggregate_pool(fl_rules(genesis), base, updates, 0)
    commit = _commit(outcome)
    replicas = [RegistryApp(genesis, verifier, blobs) for _ in range(2)]
    before = replicas[0].app_hash()
    tx = make_tx(SIGNERS[0], 0, CHAIN, commit.encode(), TxKind.MODEL_VERSION)
    head = genesis.genesis_block().header
    proposer = next(s for s in SIGNERS if s.id == replicas[0].committee(1).proposer(1, 0))
    block = make_block(head, [tx], proposer, CHAIN, app_hash=before)
    hashes = {app.apply_block(block) for app in replicas}
    assert len(hashes) == 1 and before not in hashes
    assert replicas[0].balances() == dict(outcome.rewards) == replicas[1].balances()
    assert sum(replicas[0].balances().values()) == BASE


def test_balances_are_in_the_app_hash() -> None:
    state = RegistryState(height=3, current=set(), known={}, committees={})
    paid = state.copy()
    paid.balances[bytes(32)] = 5
    assert paid.encode() != state.encode()
    other = paid.copy()
    other.balances[bytes(32)] = 6
    assert other.encode() != paid.encode()
