"""Reward lists (seed 002 Algorithm 4): exact conservation, rounding, forgery refusal, ledger."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualchain.learning.rewards import (
    MICRO,
    Balances,
    RewardError,
    check_conservation,
    reward_list,
    verify_reward_list,
)

BASE = 10 * MICRO


def test_shares_follow_theta() -> None:
    rewards = dict(reward_list({b"a": 0.6, b"b": 0.3, b"c": 0.1}, BASE))
    assert rewards == {b"a": 6 * MICRO, b"b": 3 * MICRO, b"c": MICRO}


def test_largest_remainder_and_tie_break_by_client_id() -> None:
    # Three equal shares of 10 micro-units: 3 each and one left, which goes to the smallest id.
    assert reward_list({b"c": 1.0, b"a": 1.0, b"b": 1.0}, 10) == ((b"a", 4), (b"b", 3), (b"c", 3))
    # Remainders 0.8 (x) > 0.2 (y): the left-over unit goes to x whatever the ids.
    assert reward_list({b"y": 0.1, b"x": 0.4}, 1) == ((b"x", 1),)


@settings(max_examples=200, deadline=None)
@given(
    thetas=st.lists(
        st.floats(min_value=-1.0, max_value=1.0, allow_nan=False), min_size=1, max_size=40
    ),
    base=st.integers(min_value=1, max_value=10**15),
)
def test_sum_is_exactly_base_and_each_within_one_unit(thetas: list[float], base: int) -> None:
    theta = {i.to_bytes(2, "big"): t for i, t in enumerate(thetas)}
    rewards = reward_list(theta, base)
    positive = {c: Fraction(t) for c, t in theta.items() if t > 0}
    if not positive:
        assert rewards == ()
        return
    assert sum(a for _, a in rewards) == base
    check_conservation(rewards, base)
    total = sum(positive.values())
    paid = dict(rewards)
    for cid, t in positive.items():
        assert abs(paid.get(cid, 0) - t * base / total) < 1
    # Input order does not matter.
    items = list(theta.items())
    random.Random(base).shuffle(items)
    assert reward_list(dict(items), base) == rewards


def test_per_update_pairs_sum_per_client() -> None:
    """A fast client with two high-contribution updates in the window is paid for both."""
    pairs = [(b"a", 0.25), (b"b", 0.5), (b"a", 0.25)]
    assert reward_list(pairs, 100) == ((b"a", 50), (b"b", 50))
    assert reward_list(list(reversed(pairs)), 100) == reward_list(pairs, 100)


def test_nobody_qualifies_pays_nothing() -> None:
    assert reward_list({b"a": 0.0, b"b": -0.5}, BASE) == ()
    check_conservation((), BASE)


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        (((b"a", 5), (b"b", 4)), "sum to 9 micro-units, the base is 10"),
        (((b"a", 5), (b"a", 5)), "paid twice"),
        (((b"a", 11), (b"b", -1)), "not a positive integer"),
        (((b"a", 10.0),), "not a positive integer"),
        (((b"", 10),), "empty or non-bytes"),
    ],
)
def test_conservation_refuses(rewards: tuple, message: str) -> None:
    with pytest.raises(RewardError, match=message):
        check_conservation(rewards, 10)


@pytest.mark.parametrize(
    ("theta", "base", "message"),
    [
        ({b"a": 1.0}, 0, "base must be a positive integer"),
        ({b"a": 1.0}, 1.5, "base must be a positive integer"),
        ({b"a": float("inf")}, 10, "not finite"),
        ({b"a": "x"}, 10, "not a number"),
        ({"a": 1.0}, 10, "non-empty bytes"),
    ],
)
def test_reward_list_refuses_bad_input(theta: dict, base: object, message: str) -> None:
    with pytest.raises(RewardError, match=message):
        reward_list(theta, base)  # type: ignore[arg-type]


def test_forged_list_is_refused_by_recomputation() -> None:
    honest = reward_list({b"\x01": 0.5, b"\x02": 0.3, b"\x03": 0.2}, BASE)
    verify_reward_list(list(reversed(honest)), honest)  # order does not matter
    # The same total redistributed still conserves the base: conservation alone cannot catch it.
    forged = ((b"\x01", 4 * MICRO), (b"\x02", 4 * MICRO), (b"\x03", 2 * MICRO))
    check_conservation(forged, BASE)
    with pytest.raises(RewardError, match="pays client 01 4000000, recomputed 5000000"):
        verify_reward_list(forged, honest)
    with pytest.raises(RewardError, match="leaves out client 03"):
        verify_reward_list(honest[:2], honest)
    with pytest.raises(RewardError, match="pays client 09, who earned nothing"):
        verify_reward_list((*honest, (b"\x09", 1)), honest)
    with pytest.raises(RewardError, match="twice"):
        verify_reward_list((*honest, honest[0]), honest)


def test_balances_apply_rollback_digest() -> None:
    ledger = Balances()
    empty = ledger.digest()
    v1 = reward_list({b"a": 0.5, b"b": 0.5}, BASE)
    ledger.apply_rewards(b"version:1", v1, BASE)
    ledger.apply_block_reward(b"block:aa", b"m", 2 * MICRO, expected=2 * MICRO)
    assert ledger.snapshot() == {b"a": 5 * MICRO, b"b": 5 * MICRO, b"m": 2 * MICRO}
    assert ledger.total() == 12 * MICRO
    after_v1 = ledger.digest()
    with pytest.raises(RewardError, match="not the latest applied"):
        ledger.rollback(b"version:1")
    ledger.rollback(b"block:aa")
    ledger.rollback(b"version:1")
    assert ledger.snapshot() == {} and ledger.digest() == empty
    # Replaying the same entries gives the same state on another replica, in any construction.
    replica = Balances()
    replica.apply_rewards(b"version:1", tuple(reversed(v1)), BASE)
    replica.apply_block_reward(b"block:aa", b"m", 2 * MICRO, expected=2 * MICRO)
    assert replica.digest() == after_v1
    assert Balances(replica.snapshot()).digest() == after_v1


def test_balances_refuse_and_change_nothing() -> None:
    ledger = Balances({b"a": 7})
    before = ledger.digest()
    with pytest.raises(RewardError, match="sum to"):
        ledger.apply_rewards(b"version:2", ((b"a", 3),), 10)
    with pytest.raises(RewardError, match="block reward is 3 micro-units, the chain pays 2"):
        ledger.apply_block_reward(b"block:bb", b"m", 3, expected=2)
    with pytest.raises(RewardError, match="non-negative integer"):
        ledger.apply(b"x", ((b"b", 1), (b"c", -1)))
    with pytest.raises(RewardError, match="overflow"):
        ledger.apply(b"y", ((b"a", 2**63 - 1),))
    assert ledger.digest() == before and ledger.snapshot() == {b"a": 7}
    ledger.apply(b"z", ((b"a", 1),))
    with pytest.raises(RewardError, match="already applied"):
        ledger.apply(b"z", ((b"a", 1),))
    assert ledger.balance(b"a") == 8 and ledger.balance(b"nobody") == 0
