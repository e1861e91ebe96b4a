"""Committee election by reputation (seed 001, eq. 2, read from on-chain statistics)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from dualchain.apps.ctbc.reputation import (
    ValidatorStats,
    elect,
    score,
    score_exact,
    terms,
)
from dualchain.chain.genesis import ReputationWeights

W = ReputationWeights()
PERFECT = ValidatorStats(votes_expected=100, votes_cast=100, proposal_turns=25,
                         proposals_committed=25)


def vid(n: int) -> bytes:
    return bytes([n]) * 32


def test_perfect_record_and_newcomer_both_score_the_full_weight() -> None:
    assert score_exact([PERFECT] * 4, W) == 1
    assert score_exact([], W) == 1
    assert score_exact([ValidatorStats()] * 4, W) == 1  # never a member: nothing to blame
    assert score([PERFECT], W) == 1.0


def test_each_term_reads_its_statistic() -> None:
    half_votes = ValidatorStats(votes_expected=10, votes_cast=5)
    absent = ValidatorStats(votes_expected=10, votes_cast=0)
    t = terms([half_votes, absent, ValidatorStats(), PERFECT], W)
    assert t.votes == Fraction(105, 120)
    assert t.uptime == Fraction(3, 4)  # the absent epoch only
    assert t.proposals == 1
    assert t.history == 1
    failing_leader = ValidatorStats(proposal_turns=4, proposals_committed=1)
    assert terms([failing_leader], W).proposals == Fraction(1, 4)
    assert terms([ValidatorStats(misbehaviour=1), PERFECT], W).history == 0


def test_only_the_window_counts() -> None:
    cheater = ValidatorStats(misbehaviour=1)
    weights = ReputationWeights(window_epochs=2)
    assert score_exact([cheater, PERFECT, PERFECT], weights) == 1
    assert score_exact([PERFECT, cheater, PERFECT], weights) < 1


def test_ties_are_broken_by_id_and_members_come_sorted_by_id() -> None:
    ids = [vid(n) for n in (9, 3, 7, 1, 5)]
    committee = elect(ids, {}, W, 3)
    assert committee == (vid(1), vid(3), vid(5))


def test_an_equivocator_drops_out_of_a_committee_of_perfect_validators() -> None:
    ids = [vid(n) for n in range(1, 6)]
    stats = {v: [PERFECT] * 4 for v in ids}
    assert elect(ids, stats, W, 4) == tuple(ids[:4])
    caught = PERFECT.plus(ValidatorStats(misbehaviour=1))
    stats[vid(1)] = [PERFECT, PERFECT, PERFECT, caught]
    assert elect(ids, stats, W, 4) == tuple(ids[1:])


def test_a_validator_missing_votes_ranks_below() -> None:
    ids = [vid(n) for n in range(1, 6)]
    stats = {v: [PERFECT] for v in ids}
    stats[vid(2)] = [ValidatorStats(votes_expected=100, votes_cast=90, proposal_turns=25,
                                    proposals_committed=25)]
    assert score_exact(stats[vid(2)], W) < 1
    assert elect(ids, stats, W, 4) == (vid(1), vid(3), vid(4), vid(5))


def test_a_newcomer_is_neutral() -> None:
    # Equal to a perfect incumbent (the tie goes to the lower id), ahead of an imperfect one.
    incumbent, newcomer = vid(2), vid(1)
    assert elect([incumbent, newcomer], {incumbent: [PERFECT]}, W, 1) == (newcomer,)
    assert elect([vid(3), incumbent], {incumbent: [PERFECT]}, W, 1) == (incumbent,)
    slow = ValidatorStats(votes_expected=10, votes_cast=9)
    assert elect([incumbent, vid(3)], {incumbent: [slow]}, W, 1) == (vid(3),)


def test_election_is_deterministic_and_exact() -> None:
    rng = random.Random(7)
    ids = [rng.randbytes(32) for _ in range(30)]
    stats = {}
    for v in ids:
        window = []
        for _ in range(4):
            expected = rng.randrange(0, 50)
            turns = rng.randrange(0, 10)
            window.append(ValidatorStats(
                expected, rng.randrange(0, expected + 1), turns, rng.randrange(0, turns + 1),
                int(rng.random() < 0.1),
            ))
        stats[v] = window
    weights = ReputationWeights(votes=0.1, uptime=0.7, proposals=0.1, history=0.1)
    first = elect(ids, stats, weights, 10)
    shuffled = list(ids)
    rng.shuffle(shuffled)
    assert elect(shuffled, dict(reversed(stats.items())), weights, 10) == first
    assert list(first) == sorted(first) and len(set(first)) == 10
    # 0.1 + 0.7 + 0.1 + 0.1 is 1.0000000000000002 in floats; the exact sum is 1.
    assert score_exact([], weights) == 1


def test_fewer_candidates_than_seats_elect_everyone() -> None:
    assert elect([vid(2), vid(1), vid(2)], {}, W, 4) == (vid(1), vid(2))
    with pytest.raises(ValueError):
        elect([vid(1)], {}, W, 0)
