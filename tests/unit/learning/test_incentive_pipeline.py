"""Algorithm 4 to balances on real digits deltas: clustering, fair aggregation, rewards, ledger.

Ten IID clients train from one model; three of them upload sign-flipped deltas and one free rider
uploads small random noise. Two replicas run the same pipeline from the pool in different orders.
"""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.learning.aggregation import Update
from dualchain.learning.contribution import ClusterParams, identify_contributions
from dualchain.learning.fair import aggregate_fair
from dualchain.learning.rewards import (
    MICRO,
    Balances,
    RewardError,
    reward_list,
    verify_reward_list,
)
from tests.digits_deltas import client_deltas, start_model

BASE = 100 * MICRO
FLIPPERS = {b"\x02", b"\x05", b"\x08"}
FREE_RIDER = b"\x09"


def pool() -> list[Update]:
    updates = []
    for c, delta in enumerate(client_deltas(clients=10)):
        cid = bytes([c])
        if cid in FLIPPERS:
            delta = -delta
        elif cid == FREE_RIDER:
            rng = np.random.default_rng(c)
            delta = (rng.normal(0, 1e-4, delta.size)).astype(np.float32)
        updates.append(Update(cid, 7, 64, np.ascontiguousarray(delta, dtype=np.float32)))
    return updates


def replica(updates: list[Update]) -> tuple[bytes, tuple, bytes]:
    """What a committee replica computes: model bytes, reward list, balances digest."""
    result = identify_contributions(updates, ClusterParams())
    model = aggregate_fair(start_model(), updates, 7, result.weights)
    rewards = reward_list(zip(result.client_ids, result.weights, strict=True), BASE)
    ledger = Balances()
    ledger.apply_rewards(b"version:8", rewards, BASE)
    return model.params.tobytes(), rewards, ledger.digest()


def test_attackers_and_free_rider_earn_nothing_and_weigh_nothing() -> None:
    updates = pool()
    result = identify_contributions(updates, ClusterParams())
    model = aggregate_fair(start_model(), updates, 7, result.weights)
    assert FLIPPERS | {FREE_RIDER} <= set(model.dropped)
    assert {cid for cid, _ in model.weights} == {bytes([c]) for c in range(10)} - FLIPPERS - {
        FREE_RIDER
    }
    rewards = dict(reward_list(zip(result.client_ids, result.weights, strict=True), BASE))
    assert sum(rewards.values()) == BASE
    bad = sum(rewards.get(cid, 0) for cid in FLIPPERS | {FREE_RIDER})
    assert bad <= 0.05 * BASE  # issue 16's target; here they get nothing at all
    # Honest clients of equal data earn similar shares (cosine to the mean of IID deltas).
    honest = [a for cid, a in rewards.items() if cid not in FLIPPERS | {FREE_RIDER}]
    assert max(honest) < 1.5 * min(honest)


def test_replicas_agree_and_a_forged_list_is_refused() -> None:
    updates = pool()
    model, rewards, digest = replica(updates)
    again = replica(list(reversed(updates)))
    assert again == (model, rewards, digest)
    # A proposer moving reward from an honest client to a flipper keeps the total, not the list.
    (victim, amount), *rest = rewards
    forged = ((victim, amount - MICRO), *rest, (b"\x02", MICRO))
    with pytest.raises(RewardError, match=f"pays client {victim.hex()} {amount - MICRO}, recomp"):
        verify_reward_list(forged, rewards)
    with pytest.raises(RewardError, match="pays client 02, who earned nothing"):
        verify_reward_list(((victim, amount), *rest, (b"\x02", MICRO)), rewards)
