"""The aggregation pool: when it is ready, and that a commit names exactly what it aggregated
(committee members re-execute the aggregate over the updates a commit names)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from dualchain.apps.ctbc.fl import FlRules, ModelCommitChecker, sign_update
from dualchain.chain.blobs import BlobStore
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.learning.aggregation import StalenessRule
from dualchain.learning.codec import decode_params, encode_params
from dualchain.node.config import AggregationParams
from dualchain.node.gate import CheckedUpdate
from dualchain.node.pool import UpdatePool

ALG = Algorithm.ML_DSA_44
CHAIN = "ctbc-test"
SHAPES = [("w", (6,))]


def checked(signer: Signer, base: int, value: float, task: int = 1) -> CheckedUpdate:
    delta = np.full(6, value, np.float32)
    update = sign_update(signer, CHAIN, base, 64, task, encode_params(delta, SHAPES))
    return CheckedUpdate(update, decode_params(update.params).flat)


def rules(mode: str = "fedasync") -> FlRules:
    return FlRules(CHAIN, ALG, mode, StalenessRule("eq2", max_staleness=2), 1.0, 10.0)


def test_fedasync_is_ready_at_min_updates_or_after_the_window() -> None:
    pool = UpdatePool(rules(), AggregationParams(min_updates=2, window_s=5.0))
    a = Signer.generate(ALG)
    everyone = {bytes(32)}
    assert not pool.ready(3, everyone)
    pool.add(checked(a, 3, 0.1))
    assert not pool.ready(3, everyone, now=0.0)
    assert pool.ready(3, everyone, now=1e12)  # the window has passed
    pool.add(checked(a, 3, 0.2, task=2))
    assert pool.ready(3, everyone, now=0.0)


def test_plan_policy_waits_for_every_planned_client_or_the_deadline() -> None:
    pool = UpdatePool(rules(), AggregationParams(policy="plan", deadline_s=10.0))
    a, b, c = (Signer.generate(ALG) for _ in range(3))
    planned = {a.id, b.id}
    pool.add(checked(c, 2, 0.1))  # a late update of an earlier round starts no clock
    assert not pool.ready(3, planned, now=1e12)
    pool.add(checked(a, 3, 0.1))
    assert not pool.ready(3, planned)
    assert pool.ready(3, planned, now=1e12)  # the deadline has passed
    pool.add(checked(b, 3, 0.2))
    assert pool.ready(3, planned)


def test_quorum_policy_waits_for_its_fraction_of_the_clients() -> None:
    pool = UpdatePool(rules(), AggregationParams(policy="quorum", quorum=0.5, deadline_s=10.0))
    signers = [Signer.generate(ALG) for _ in range(4)]
    expected = {s.id for s in signers}
    pool.add(checked(signers[0], 3, 0.1))
    assert not pool.ready(3, expected)
    pool.add(checked(signers[1], 3, 0.1))
    assert pool.ready(3, expected)


def test_a_commit_names_exactly_the_updates_it_aggregated(tmp_path: Path, verifier) -> None:
    pool = UpdatePool(rules(), AggregationParams(min_updates=1))
    clients = [Signer.generate(ALG) for _ in range(3)]
    fresh = [checked(clients[0], 5, 0.1), checked(clients[1], 4, 0.2)]
    stale = checked(clients[2], 1, 0.3)  # staleness 4 > 2
    for c in [*fresh, stale]:
        pool.add(c)
    base = np.zeros(6, np.float32)
    params, commit, digests = pool.build(base, 5)
    assert set(digests) == {c.update.digest for c in fresh}
    blobs = BlobStore(tmp_path)
    parent = blobs.put(encode_params(base, SHAPES))
    for c in fresh:
        blobs.put(c.update.encoded)
    model_hash = hashlib.sha256(encode_params(params, SHAPES)).digest()
    ModelCommitChecker(rules(), blobs, verifier).check(replace(commit, model_hash=model_hash),
                                                       parent, 5)
    assert pool.prune(5) == [clients[2].id]
    assert len(pool) == 2


def test_the_same_delta_of_a_client_under_another_task_is_pooled_once(tmp_path: Path) -> None:
    """A client (a free rider drawing its noise per version) that uploads the same delta on the
    same version twice must not stall the commits: the rules refuse a pool holding both."""
    pool = UpdatePool(rules(), AggregationParams(min_updates=1))
    a, b = Signer.generate(ALG), Signer.generate(ALG)
    assert pool.add(checked(a, 3, 0.1, task=1))
    assert not pool.add(checked(a, 3, 0.1, task=2))  # same delta, another task
    assert pool.add(checked(a, 3, 0.2, task=3))  # another delta: a second update
    assert pool.add(checked(b, 3, 0.1, task=1))  # another client
    assert len(pool) == 3
    _, _, digests = pool.build(np.zeros(6, np.float32), 3)
    assert len(digests) == 3
